"""Server settings from an e-mail address, so people connecting IMAP/SMTP do not type host names.

Thunderbird's conventions, in its order: a bundled copy of the common providers (mail/data/ispdb.json,
after Mozilla's ISPDB), then the domain's own autoconfig file at
`https://autoconfig.<domain>/mail/config-v1.1.xml` and `https://<domain>/.well-known/autoconfig/...`.
Runs in the web process for the connect form; the user names the domain, so every fetch goes through
the outbound-request guard (pinned to the vetted address), over TLS 1.2+, with one short total
deadline, a size cap, no redirects and no cookies. Unlike Thunderbird we do not send the address in
the query string: the domain learns only that someone looked. The XML is parsed with defusedxml (no
entity expansion, no external entities). A guess only fills the form; the connection is still
verified by the vault worker before it is saved as active.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException
from django.conf import settings

from aiemaily.security import netguard

logger = logging.getLogger(__name__)

ISPDB_FILE = Path(__file__).resolve().parent / "data" / "ispdb.json"
MAX_BYTES = 64 * 1024
DEADLINE_SECONDS = 6.0
SECURITY_FROM_SOCKET_TYPE = {"SSL": "tls", "STARTTLS": "starttls", "plain": "none"}


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    security: str  # "tls" | "starttls" | "none", the connection form's values


@dataclass(frozen=True)
class MailSettings:
    source: str  # "bundled" | "autoconfig"
    imap: Server
    smtp: Server
    username: str

    def as_dict(self) -> dict:
        return asdict(self)


def _split(address: str) -> tuple[str, str] | None:
    local, _, domain = (address or "").strip().rpartition("@")
    if not local or not domain or len(address) > 254:
        return None
    try:
        return local, netguard.normalise_host(domain)
    except netguard.BlockedDestination:
        return None


@cache
def _bundled() -> dict[str, dict]:
    providers = json.loads(ISPDB_FILE.read_text())["providers"]
    return {domain: entry for entry in providers.values() for domain in entry["domains"]}


def _username(template: str, address: str, local: str) -> str:
    return {"email": address, "localpart": local}.get(template, address)


def bundled_settings(address: str) -> MailSettings | None:
    split = _split(address)
    if split is None:
        return None
    local, domain = split
    entry = _bundled().get(domain)
    if entry is None:
        return None
    return MailSettings("bundled", Server(**entry["imap"]), Server(**entry["smtp"]),
                        _username(entry["username"], address.strip(), local))


def autoconfig_urls(domain: str) -> list[str]:
    return [f"https://autoconfig.{domain}/mail/config-v1.1.xml",
            f"https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml"]


class AutoconfigError(Exception):
    """A domain's autoconfig could not be used; the message is safe to log (no response content)."""


def _fetch(url: str, *, resolver=None) -> bytes:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise AutoconfigError("only https autoconfig URLs are fetched")
    deadline = time.monotonic() + DEADLINE_SECONDS
    try:
        vetted = netguard.vet_host(parts.hostname, parts.port or 443, resolver=resolver)
    except netguard.BlockedDestination as exc:
        raise AutoconfigError(f"destination refused: {exc}") from None
    connection = netguard.PinnedHTTPSConnection(vetted, timeout=2.0, cafile=settings.AIEMAILY_AUTOCONFIG_CA_BUNDLE)
    try:
        connection.request("GET", parts.path or "/", headers={"Accept": "application/xml, text/xml",
                                                              "User-Agent": "Aiemaily-autoconfig"})
        response = connection.getresponse()
        if response.status != 200:  # redirects included: never followed
            raise AutoconfigError(f"answered {response.status}")
        body = b""
        while len(body) <= MAX_BYTES:
            if time.monotonic() > deadline:
                raise AutoconfigError("too slow")
            chunk = response.read1(8192)
            if not chunk:
                return body
            body += chunk
        raise AutoconfigError("too large")
    except (OSError, ValueError) as exc:  # ssl.SSLError, timeouts and resets are OSErrors
        raise AutoconfigError(f"unreachable ({type(exc).__name__})") from None
    finally:
        connection.close()


def _server(element, address: str, local: str) -> tuple[Server, str] | None:
    host = (element.findtext("hostname") or "").strip()
    port = (element.findtext("port") or "").strip()
    security = SECURITY_FROM_SOCKET_TYPE.get((element.findtext("socketType") or "").strip())
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or security is None:
        return None
    try:
        host = netguard.normalise_host(host)
    except netguard.BlockedDestination:
        return None
    username = (element.findtext("username") or "%EMAILADDRESS%").strip()
    username = username.replace("%EMAILADDRESS%", address).replace("%EMAILLOCALPART%", local)
    return Server(host, int(port), security), username[:254]


def parse_config(xml: bytes, address: str) -> MailSettings | None:
    """The first usable IMAP incoming and SMTP outgoing server of a config-v1.1 document."""
    local = address.rpartition("@")[0]
    try:
        root = ElementTree.fromstring(xml, forbid_dtd=True)
    except (ElementTree.ParseError, DefusedXmlException, ValueError):
        return None
    provider = root.find("emailProvider")
    if root.tag != "clientConfig" or provider is None:
        return None
    imap = next((found for el in provider.findall("incomingServer") if el.get("type") == "imap"
                 for found in [_server(el, address, local)] if found), None)
    smtp = next((found for el in provider.findall("outgoingServer") if el.get("type") == "smtp"
                 for found in [_server(el, address, local)] if found), None)
    if imap is None or smtp is None:
        return None
    return MailSettings("autoconfig", imap[0], smtp[0], imap[1])


def domain_settings(address: str, *, urls: list[str] | None = None, resolver=None) -> MailSettings | None:
    split = _split(address)
    if split is None:
        return None
    for url in urls or autoconfig_urls(split[1]):
        try:
            found = parse_config(_fetch(url, resolver=resolver), address.strip())
        except AutoconfigError as exc:
            logger.info("autoconfig: %s for %s", exc, split[1])
            continue
        if found:
            return found
    return None


def settings_discover(address: str) -> MailSettings | None:
    """What to fill in for `address`: the bundled providers first, then the domain's own autoconfig."""
    return bundled_settings(address) or domain_settings(address)
