"""The browser-session ledger's small pieces: what a sign-in records about the browser, and the key
under which a session remembers its ledger row.

The ledger itself (accounts.models.BrowserSession) is written in services.py, read in selectors.py,
opened and closed by the sign-in/sign-out signals (signals.py) and enforced on every request by
SessionLedgerMiddleware (middleware.py).
"""

import ipaddress
import re

# Kept in the server-side session data (never in a cookie): the id of this session's ledger row.
SESSION_ROW_KEY = "_aiemaily_session_row"

_BROWSERS = [("Edge", r"Edg/"), ("Opera", r"OPR/"), ("Firefox", r"Firefox/"), ("Chromium", r"Chromium/"),
             ("Chrome", r"(Headless)?Chrome/"), ("Safari", r"Safari/"), ("curl", r"^curl/")]
_SYSTEMS = [("Android", r"Android"), ("iPhone", r"iPhone"), ("iPad", r"iPad"), ("Windows", r"Windows"),
            ("macOS", r"Mac OS X|Macintosh"), ("ChromeOS", r"CrOS"), ("Linux", r"Linux")]


def user_agent_summary(header: str) -> str:
    """'Firefox on Linux': enough to recognise one's own browser; the full header (a fingerprint,
    and free text an attacker chooses) is not kept."""
    header = header[:512]
    browser = next((name for name, pattern in _BROWSERS if re.search(pattern, header)), "")
    system = next((name for name, pattern in _SYSTEMS if re.search(pattern, header)), "")
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown browser"


def ip_prefix(address: str) -> str:
    """The client's network, not its address: IPv4 /24, IPv6 /48. Empty when it is not an address."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return ""
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
