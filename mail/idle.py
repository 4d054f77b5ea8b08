"""IMAP IDLE (RFC 2177): wait on a mailbox until the server says something changed.

RFC 2177 asks clients to re-issue IDLE at least every 29 minutes; a watch session ends after
`max_seconds` (default 25 min) and the watcher starts a fresh one with a fresh lease.
"""

import time

IDLE_SECONDS = 25 * 60
CHECK_SECONDS = 30


def wait_for_change(client, folder: str = "INBOX", max_seconds: float = IDLE_SECONDS,
                    check_seconds: float = CHECK_SECONDS) -> bool:
    """Block in IDLE until new mail, an expunge or a flag change (True) or `max_seconds` (False)."""
    client.select_folder(folder, readonly=True)
    client.idle()
    deadline = time.monotonic() + max_seconds
    changed = False
    try:
        while time.monotonic() < deadline and not changed:
            responses = client.idle_check(timeout=min(check_seconds, max(deadline - time.monotonic(), 0.1)))
            changed = any(len(r) > 1 and r[1] in (b"EXISTS", b"EXPUNGE", b"FETCH", b"RECENT") for r in responses)
    finally:
        client.idle_done()
    return changed
