"""What Gmail and Microsoft Graph sync share: an HTTPS client for a leased access token that retries
what is worth retrying, and the storage steps every REST sync takes.

The client
- sends the token only to the configured API origin: absolute URLs the provider hands back
  (Graph's @odata.nextLink / @odata.deltaLink) are checked first, and redirects are not followed,
  so a tampered link can never carry the bearer token elsewhere;
- treats a 401 as "the grant is gone" when the freshly leased token never worked (AuthFailed: the
  task marks the connection needs_reauth), and as an expiry during a long run otherwise
  (TokenExpired: the task queues a continuation with a new lease);
- retries 429, 5xx, rate-limit 403s and dropped connections with exponential backoff (honouring
  Retry-After), then gives up with a ProviderError whose message is fit for the user;
- never puts a token, a URL or a response body in an error message or a log line (URLs carry
  delta/page tokens and bodies may echo the request).

Storage follows mail/sync/imap.py: network I/O outside database transactions; each batch written
in its own short transaction bound to the owner; bodies are encrypted objects whose names derive
from the provider id, so a batch replayed after a crash overwrites its own objects instead of
leaving orphans, and the unique (connection, provider_id) constraint keeps rows single.
"""

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.utils import timezone

from aiemaily.ownership.binding import owner_scope
from mail import blobstore
from mail.models import Connection, Folder, Message
from mail.parsing import header_thread_id, parse

logger = logging.getLogger(__name__)

TIMEOUT = (10, 60)  # connect, read (seconds); a raw message of tens of MB takes a while
RETRIES = 4  # after the first attempt; with the backoff below, about 15 s before giving up
BACKOFF_SECONDS = 1.0  # first pause; doubled each retry (tests shrink it)
MAX_BACKOFF_SECONDS = 30.0
FETCH_WORKERS = 4  # parallel body downloads; providers throttle more than this per user anyway
RETRY_STATUSES = {429, 500, 502, 503, 504}
_RATE_LIMIT_403 = (b"rateLimitExceeded", b"userRateLimitExceeded")  # Gmail throttles with 403 too


class ProviderError(Exception):
    """An answer the sync cannot use. `message` is for the user and never holds a token or URL."""

    code = "provider_error"

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.message, self.status = message, status


class AuthFailed(ProviderError):
    """401 on the first call with a freshly leased token: the grant is gone (consent revoked,
    account disabled). Needs a new sign-in."""

    code = "auth_failed"


class TokenExpired(ProviderError):
    """401 after the same token already worked in this run: it expired during a long sync (Google
    and Microsoft access tokens live about an hour). Not the user's problem: continue with a new
    lease, and let the vault's refresh decide whether the grant still stands."""

    code = "token_expired"


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class ApiClient:
    """JSON over HTTPS to one API origin with one access token; one HTTP session per thread."""

    name = "The provider"

    def __init__(self, base: str, session_factory: Callable[[], requests.Session]):
        self.base = base.rstrip("/")
        self._origin = _origin(self.base)
        self._factory = session_factory
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None  # kept for the run: its threads keep their connections
        self.accepted = False  # the token has worked at least once in this run

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._factory()
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def url(self, path_or_url: str) -> str:
        if "://" not in path_or_url:
            return self.base + path_or_url
        if _origin(path_or_url) != self._origin:
            raise ProviderError(f"{self.name} sent a link to another server; the sync stopped there.")
        return path_or_url

    def request(self, method: str, path_or_url: str, *, params=None, headers=None,
                passthrough: Iterable[int] = ()) -> requests.Response:
        """A response with a 2xx status or one listed in `passthrough`; anything else raises."""
        url = self.url(path_or_url)
        # Per request: requests lets REQUESTS_CA_BUNDLE override a session's `verify`.
        verify = settings.AIEMAILY_PROVIDER_CA_BUNDLE or True
        last, response = "no answer", None
        for attempt in range(RETRIES + 1):
            if attempt:
                time.sleep(self._delay(attempt, response))
            try:
                response = self._session().request(method, url, params=params, headers=headers, timeout=TIMEOUT,
                                                   allow_redirects=False, verify=verify)
            except requests.exceptions.SSLError:
                raise ProviderError(f"{self.name}'s server certificate could not be verified.") from None
            except (requests.ConnectionError, requests.Timeout):
                response, last = None, "no answer"
                continue
            status = response.status_code
            if status == 401 and self.accepted:
                raise TokenExpired(f"{self.name}'s access token expired during the sync; continuing.", status=status)
            if status == 401:
                raise AuthFailed(f"{self.name} no longer accepts Aiemaily's access; please sign in again.",
                                 status=status)
            if 200 <= status < 300 or status in passthrough:
                self.accepted = True
                return response
            if status in RETRY_STATUSES or (status == 403 and any(m in response.content for m in _RATE_LIMIT_403)):
                last = f"HTTP {status}"
                continue
            raise ProviderError(f"{self.name} refused a sync request (HTTP {status}).", status=status)
        raise ProviderError(f"{self.name} is not answering right now ({last}); the next sync will try again.")

    @staticmethod
    def _delay(attempt: int, response: requests.Response | None) -> float:
        retry_after = response.headers.get("Retry-After", "") if response is not None else ""
        if retry_after.isdigit():
            return min(float(retry_after), MAX_BACKOFF_SECONDS)
        pause = min(BACKOFF_SECONDS * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
        return pause + random.uniform(0, pause / 4)  # jitter: many workers do not retry in step

    def json(self, method: str, path_or_url: str, **kwargs) -> dict:
        return self.decode(self.request(method, path_or_url, **kwargs))

    def decode(self, response: requests.Response) -> dict:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise ProviderError(f"{self.name} sent an answer that could not be read.")
        return payload

    def fetch_many(self, fetch: Callable, ids: list[str]) -> list:
        """`fetch(id)` for each id, a few at a time, results in order. The first error propagates."""
        if len(ids) <= 1:
            return [fetch(i) for i in ids]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=FETCH_WORKERS, thread_name_prefix="mail-fetch")
        return list(self._pool.map(fetch, ids))


# --- storage ---------------------------------------------------------------------------------------

@dataclass
class Fetched:
    """One downloaded message: the raw RFC 5322 bytes and what the provider says about it."""

    provider_id: str
    raw: bytes
    labels: list[str]
    unread: bool
    thread_id: str = ""
    message_id: str = ""
    date: datetime | None = None
    size: int | None = None
    snippet: str = ""


def object_name(prefix: str, provider_id: str) -> str:
    """A stable object name per message: provider ids may hold '/', '+' or be very long, so hashed."""
    return f"{prefix}-{hashlib.sha256(provider_id.encode('utf-8', 'replace')).hexdigest()[:40]}"


def build_row(owner_id, connection: Connection, folder: Folder, item: Fetched, prefix: str) -> Message:
    """Encrypt the body into object storage and return the (unsaved) metadata row. Never raises on
    a malformed message: parse() always answers, and what it cannot read is shown raw."""
    parsed = parse(item.raw)
    key = blobstore.put(owner_id, ("messages", str(connection.pk), object_name(prefix, item.provider_id)), item.raw)
    # The provider's thread id (Gmail threadId, Graph conversationId) is the provider's own grouping,
    # which a sender cannot choose; only without one do the sender's headers decide (marked so).
    thread = item.thread_id or header_thread_id(parsed)
    return Message(
        owner_id=owner_id, connection=connection, folder=folder, provider_id=item.provider_id,
        message_id=(parsed.message_id or item.message_id)[:998], thread_id=thread[:200],
        from_addr=parsed.from_addr, to_addrs=parsed.to_addrs, cc_addrs=parsed.cc_addrs, subject=parsed.subject,
        date=parsed.date or item.date or timezone.now(), labels=list(item.labels), unread=item.unread,
        size=item.size if item.size is not None else len(item.raw), snippet=(parsed.snippet or item.snippet)[:300],
        blob_key=key, parse_error=parsed.parse_error,
    )


@dataclass(frozen=True)
class Stored:
    pk: object
    folder_id: object
    labels: list
    unread: bool


def stored(owner_id, connection_id, provider_ids: Iterable[str]) -> dict[str, Stored]:
    """The rows this connection already has for these provider ids."""
    ids, found = list(dict.fromkeys(provider_ids)), {}
    with owner_scope(owner_id):
        for start in range(0, len(ids), 1000):
            # exclude(provider_id=""): the partial unique index's own condition, so the planner uses it
            rows = Message.objects.for_owner(owner_id).filter(
                connection_id=connection_id, provider_id__in=ids[start:start + 1000]).exclude(
                provider_id="").values_list("provider_id", "pk", "folder_id", "labels", "unread")
            found.update({pid: Stored(pk, folder, labels or [], unread) for pid, pk, folder, labels, unread in rows})
    return found


def delete_rows(owner_id, connection_id, provider_ids: Iterable[str], folder_id=None) -> list[str]:
    """Inside the caller's owner_scope: delete the rows; returns their object keys, to delete after
    the commit (an object deleted before a rollback would leave a row without a body)."""
    ids, keys = list(provider_ids), []
    for start in range(0, len(ids), 1000):
        query = Message.objects.for_owner(owner_id).filter(
            connection_id=connection_id, provider_id__in=ids[start:start + 1000]).exclude(provider_id="")
        if folder_id is not None:
            query = query.filter(folder_id=folder_id)
        keys += [k for k in query.values_list("blob_key", flat=True) if k]
        query.delete()
    return keys


def delete_objects(owner_id, keys: Iterable[str]) -> None:
    for key in keys:
        blobstore.delete(owner_id, key)


def merge_state(owner_id, connection_id, section: str, patch: dict) -> None:
    """Update one provider's section of Connection.sync_state (the cursors), under the row lock."""
    with owner_scope(owner_id):
        connection = Connection.objects.for_owner(owner_id).select_for_update().get(pk=connection_id)
        state = dict(connection.sync_state or {})
        state[section] = {**(state.get(section) or {}), **patch}
        Connection.objects.for_owner(owner_id).filter(pk=connection_id).update(sync_state=state)


def folder_row(owner_id, connection_id, name: str, role: str) -> Folder:
    with owner_scope(owner_id):
        folder, _ = Folder.objects.for_owner(owner_id).get_or_create(
            owner_id=owner_id, connection_id=connection_id, name=name[:500], defaults={"role": role})
    return folder


def chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]
