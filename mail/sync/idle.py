"""IMAP IDLE (RFC 2177): wait on a mailbox until the server says something changed.

RFC 2177 asks clients to re-issue IDLE at least every 29 minutes; a watch session ends after
`max_seconds` (default 25 min) and the watcher starts a fresh one with a fresh lease.

A connection the server closed (a restart, a BYE, a reset) ends the session with ConnectionDropped:
imapclient's idle_check answers `[]` at once, again and again, at EOF (the socket polls readable and
the read hits EOF), so a loop that only waited for news would spin at 100% of a core.
"""

import imaplib
import select
import time

IDLE_SECONDS = 25 * 60
CHECK_SECONDS = 30


class ConnectionDropped(Exception):
    """The server closed or broke the IDLE connection; reconnect later, never poll it again."""


def _readable_now(client) -> bool:
    try:
        sock = client.socket()
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # a closed socket has no file number any more
        return True


def _check(client, timeout: float) -> list:
    started = time.monotonic()
    try:
        responses = client.idle_check(timeout=timeout)
    except (imaplib.IMAP4.abort, OSError) as exc:
        raise ConnectionDropped(type(exc).__name__) from None
    if any(r and r[0] == b"BYE" for r in responses):
        raise ConnectionDropped("BYE")
    if not responses and time.monotonic() - started < timeout * 0.5 and _readable_now(client):
        # Woken up, read nothing, and still readable: the read hit end-of-file.
        raise ConnectionDropped("EOF")
    return responses


def wait_for_change(client, folder: str = "INBOX", max_seconds: float = IDLE_SECONDS,
                    check_seconds: float = CHECK_SECONDS, keep_going=None) -> bool:
    """Block in IDLE until new mail, an expunge or a flag change (True), `max_seconds` or
    `keep_going()` turning false (False). Raises ConnectionDropped when the server goes away."""
    client.select_folder(folder, readonly=True)
    client.idle()
    deadline = time.monotonic() + max_seconds
    changed = False
    try:
        while time.monotonic() < deadline and not changed:
            responses = _check(client, min(check_seconds, max(deadline - time.monotonic(), 0.1)))
            changed = any(len(r) > 1 and r[1] in (b"EXISTS", b"EXPUNGE", b"FETCH", b"RECENT") for r in responses)
            if not changed and keep_going is not None and not keep_going():
                break
    except ConnectionDropped:
        raise  # nothing to end: the connection is gone
    else:
        try:
            client.idle_done()
        except (imaplib.IMAP4.abort, OSError) as exc:
            if not changed:
                raise ConnectionDropped(type(exc).__name__) from None
    return changed
