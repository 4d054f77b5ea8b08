"""Gmail sync over the Gmail REST API: one full listing, then history-based increments.

Folders and labels. Gmail has labels, not folders, and a message carries several. Each message is
stored once (unique per connection and Gmail id) with all its label ids in `labels`; `unread` is
"UNREAD" in them. It is filed in one Folder row, named as Gmail's own IMAP names it, for the place
a Gmail user finds it: TRASH > SPAM > DRAFT > INBOX > SENT > "[Gmail]/All Mail". So
`?folder=INBOX` is the inbox, archiving (INBOX removed) moves a message to All Mail, and
`?label=Label_12` finds a user label; label names are kept in sync_state["gmail"]["labels"].

Cursor. The mailbox historyId, in Connection.sync_state["gmail"]["history_id"] (PostgreSQL).

Full sync. getProfile's historyId is read *before* listing; then users.messages.list (spam and
trash included, so a message moving there is only a label change) and users.messages.get
?format=raw for every id not stored yet, in batches each committed in its own transaction. Rows
the listing no longer shows are removed, the cursor is set, and history from it catches what
changed while we listed. An interrupted full sync starts the listing again (page tokens are not
kept): ids already stored are skipped without fetching their bodies, and the complete listing is
what makes removing vanished rows safe. Messages that were already stored get their labels
rebuilt from one listing per label (labelIds=…), since no history reaches back to their changes.
A too-old historyId (404) leads here too: nothing is fetched twice, nothing duplicated.

Incremental. users.history.list from the cursor, page by page: new messages stored in batches,
then deletions, label changes and the page's last history id in one transaction. Applying a
record twice changes nothing, so a crash mid-page just replays it.
"""

import base64
import binascii
import html
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from google.auth.transport.requests import AuthorizedSession
from google.oauth2.credentials import Credentials

from aiemaily.ownership.binding import owner_scope
from mail.models import Connection, Folder, Message
from mail.sync.imap import Progress, _save_progress
from mail.sync.rest import (
    ApiClient,
    Fetched,
    ProviderError,
    build_row,
    chunks,
    delete_objects,
    delete_rows,
    folder_row,
    merge_state,
    stored,
)
from secrets_vault.crypto import SecretStr

logger = logging.getLogger(__name__)

STATE = "gmail"  # the section of Connection.sync_state
USER = "/gmail/v1/users/me"
LIST_PAGE = 500  # messages.list maxResults (Gmail's maximum)
HISTORY_PAGE = 500
BATCH = 100  # bodies fetched, then committed together
HISTORY_TYPES = ("messageAdded", "messageDeleted", "labelAdded", "labelRemoved")
# Where a Gmail user finds a message, first match wins: (label, folder name, role).
MAILBOXES = (("TRASH", "[Gmail]/Trash", "trash"), ("SPAM", "[Gmail]/Spam", "junk"),
             ("DRAFT", "[Gmail]/Drafts", "drafts"), ("INBOX", "INBOX", "inbox"),
             ("SENT", "[Gmail]/Sent Mail", "sent"))
ALL_MAIL = ("[Gmail]/All Mail", "all")


class HistoryExpired(ProviderError):
    """history.list answered 404: the start historyId is too old (or unknown). Full sync needed."""


class GmailApi(ApiClient):
    """The few Gmail API calls sync needs, through google-auth's AuthorizedSession."""

    name = "Gmail"

    def __init__(self, token: SecretStr):
        def session():
            # No refresh: worker-sync never holds a refresh token. A 401 comes back as a response
            # (refresh_status_codes empty) and becomes AuthFailed.
            return AuthorizedSession(Credentials(token=token.reveal()), refresh_status_codes=())

        super().__init__(settings.GMAIL_API_BASE, session)

    def profile(self) -> dict:
        return self.json("GET", f"{USER}/profile")

    def labels(self) -> dict[str, str]:
        payload = self.json("GET", f"{USER}/labels")
        return {str(lab["id"]): str(lab.get("name") or lab["id"]) for lab in payload.get("labels") or []
                if isinstance(lab, dict) and lab.get("id")}

    def list_page(self, page_token: str | None, label: str | None = None) -> dict:
        params = {"maxResults": LIST_PAGE, "includeSpamTrash": "true"}
        if label:
            params["labelIds"] = label
        if page_token:
            params["pageToken"] = page_token
        return self.json("GET", f"{USER}/messages", params=params)

    def list_ids(self, label: str | None = None):
        """Every message id (with `label`, if given), page after page."""
        page_token = None
        while True:
            page = self.list_page(page_token, label)
            yield from (str(m["id"]) for m in page.get("messages") or [] if isinstance(m, dict) and m.get("id"))
            page_token = page.get("nextPageToken")
            if not page_token:
                return

    def history_page(self, start: str, page_token: str | None) -> dict:
        params = {"startHistoryId": start, "historyTypes": list(HISTORY_TYPES), "maxResults": HISTORY_PAGE}
        if page_token:
            params["pageToken"] = page_token
        response = self.request("GET", f"{USER}/history", params=params, passthrough=(404,))
        if response.status_code == 404:
            raise HistoryExpired("Gmail's change history no longer reaches back to the last sync.", status=404)
        return self.decode(response)

    def get_raw(self, message_id: str) -> dict | None:
        """The message in format=raw, or None if it was deleted since it was listed."""
        response = self.request("GET", f"{USER}/messages/{message_id}", params={"format": "raw"},
                                passthrough=(404,))
        return None if response.status_code == 404 else self.decode(response)


def raw_bytes(payload: dict) -> bytes:
    """Gmail's `raw` is base64url, often without padding. Undecodable data is kept as it came, so
    the message is still listed (and shown raw) rather than lost."""
    data = payload.get("raw") or ""
    if not isinstance(data, str):
        return b""
    try:
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return data.encode("utf-8", "replace")


def mailbox(labels) -> tuple[str, str]:
    present = set(labels)
    return next(((name, role) for label, name, role in MAILBOXES if label in present), ALL_MAIL)


def _internal_date(payload: dict) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(payload["internalDate"]) / 1000, tz=UTC)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return None


def fetched(payload: dict) -> Fetched:
    labels = [str(lab) for lab in payload.get("labelIds") or []]
    size = payload.get("sizeEstimate")
    return Fetched(provider_id=str(payload["id"]), raw=raw_bytes(payload), labels=labels,
                   unread="UNREAD" in labels, thread_id=str(payload.get("threadId") or ""),
                   date=_internal_date(payload), size=size if isinstance(size, int) and size >= 0 else None,
                   snippet=html.unescape(str(payload.get("snippet") or "")))


@dataclass
class Change:
    """The net effect of a history page on one message: deleted, and label ops in order."""

    deleted: bool = False
    ops: list[tuple[str, bool]] = field(default_factory=list)


def net_changes(records: list) -> dict[str, Change]:
    changes: dict[str, Change] = {}

    def change(entry) -> Change | None:
        message = entry.get("message") if isinstance(entry, dict) else None
        message_id = message.get("id") if isinstance(message, dict) else None
        return changes.setdefault(str(message_id), Change()) if message_id else None

    for record in records:
        if not isinstance(record, dict):
            continue
        for entry in record.get("messagesAdded") or []:
            change(entry)
        for entry in record.get("messagesDeleted") or []:
            if (found := change(entry)) is not None:
                found.deleted = True
        for key, present in (("labelsAdded", True), ("labelsRemoved", False)):
            for entry in record.get(key) or []:
                if (found := change(entry)) is not None:
                    found.ops += [(str(lab), present) for lab in entry.get("labelIds") or []]
    return changes


def apply_ops(labels: list, ops: list[tuple[str, bool]]) -> list:
    result = list(labels)
    for label, present in ops:
        if present and label not in result:
            result.append(label)
        elif not present and label in result:
            result.remove(label)
    return result


def _history_id(value) -> str | None:
    text = str(value) if value is not None else ""
    return text if text.isdigit() else None


def _store_batch(sync: "GmailSync", payloads: list[dict]) -> int:
    """Encrypt and store one batch of fetched messages in one transaction."""
    rows = []
    for payload in payloads:
        item = fetched(payload)
        rows.append(build_row(sync.owner_id, sync.connection, sync.folder_for(item.labels), item, "gmail"))
    with owner_scope(sync.owner_id):
        Message.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


class GmailSync:
    """One run over one connection. Small steps; every write in its own owner-bound transaction."""

    def __init__(self, api: GmailApi, owner_id, connection: Connection, progress: Progress):
        self.api, self.owner_id, self.connection, self.progress = api, owner_id, connection, progress
        self._folders: dict[str, Folder] = {}
        self.label_ids: list[str] = []

    def run(self) -> Progress:
        _save_progress(self.owner_id, self.connection.pk, self.progress.as_state("syncing"))
        labels = self.api.labels()
        self.label_ids = list(labels)
        merge_state(self.owner_id, self.connection.pk, STATE, {"labels": labels})
        cursor = _history_id(((self.connection.sync_state or {}).get(STATE) or {}).get("history_id"))
        try:
            if cursor:
                self.incremental(cursor)
            else:
                self.full()
        except HistoryExpired:
            logger.info("Gmail history expired for connection %s: full resync", self.connection.pk)
            self.full()
        self.progress.total = max(self.progress.total, self.progress.done)
        _save_progress(self.owner_id, self.connection.pk, self.progress.as_state("idle"))
        return self.progress

    def folder_for(self, labels) -> Folder:
        name, role = mailbox(labels)
        if name not in self._folders:
            self._folders[name] = folder_row(self.owner_id, self.connection.pk, name, role)
        return self._folders[name]

    # --- full ------------------------------------------------------------------------------------

    def full(self) -> None:
        profile = self.api.profile()
        start = _history_id(profile.get("historyId"))
        if start is None:
            raise ProviderError("Gmail did not say where its change history stands.")
        self.progress.total += int(profile.get("messagesTotal") or 0)
        seen: set[str] = set()
        skipped: set[str] = set()
        page: list[str] = []
        for message_id in self.api.list_ids():
            seen.add(message_id)
            page.append(message_id)
            if len(page) >= LIST_PAGE:
                skipped |= self._fetch_new(page)
                page = []
        skipped |= self._fetch_new(page)
        self._sweep(seen)
        if skipped:
            self._refresh_labels(skipped)
        merge_state(self.owner_id, self.connection.pk, STATE, {"history_id": start})
        self.incremental(start)  # what changed while we listed

    def _refresh_labels(self, ids: set[str]) -> None:
        """Messages stored before this listing may have changed labels while no history reached them
        (a resync, or a full sync restarted after a crash). One listing per label rebuilds every
        message's label set: a few list calls per label instead of one call per message."""
        current: dict[str, list[str]] = {i: [] for i in ids}
        for label in self.label_ids:
            for message_id in self.api.list_ids(label):
                if message_id in current:
                    current[message_id].append(label)
        known = stored(self.owner_id, self.connection.pk, ids)
        rows = list(known.items())
        for batch in chunks(rows, 1000):
            with owner_scope(self.owner_id):
                for message_id, row in batch:
                    kept = [lab for lab in row.labels if lab in current[message_id]]
                    self._relabel(row, kept + [lab for lab in current[message_id] if lab not in kept])

    def _fetch_new(self, ids: list[str], *, count_known: bool = True) -> set[str]:
        """Fetch and store the ids not stored yet; returns those that were (skipped)."""
        known = stored(self.owner_id, self.connection.pk, ids)
        if count_known:
            self.progress.done += len(known)
        new = [i for i in dict.fromkeys(ids) if i not in known]
        for batch in chunks(new, BATCH):
            payloads = [p for p in self.api.fetch_many(self.api.get_raw, batch) if p and p.get("id")]
            if payloads:
                self.progress.done += _store_batch(self, payloads)
            _save_progress(self.owner_id, self.connection.pk, self.progress.as_state("syncing"))
        return set(known)

    def _sweep(self, seen: set[str]) -> None:
        """After a complete listing: rows of messages Gmail no longer has."""
        with owner_scope(self.owner_id):
            have = Message.objects.for_owner(self.owner_id).filter(connection_id=self.connection.pk)
            gone = [pid for pid in have.values_list("provider_id", flat=True) if pid not in seen]
            keys = delete_rows(self.owner_id, self.connection.pk, gone)
        delete_objects(self.owner_id, keys)

    # --- incremental -----------------------------------------------------------------------------

    def incremental(self, start: str) -> None:
        page_token = None
        while True:
            page = self.api.history_page(start, page_token)
            records = [r for r in page.get("history") or [] if isinstance(r, dict)]
            page_token = page.get("nextPageToken")
            ids = [int(h) for r in records if (h := _history_id(r.get("id")))]
            cursor = (_history_id(page.get("historyId")) if not page_token else None) or (
                str(max(ids)) if ids else None)
            self._apply(records, cursor)
            if not page_token:
                return

    def _apply(self, records: list, cursor: str | None) -> None:
        changes = net_changes(records)
        known = stored(self.owner_id, self.connection.pk, changes)
        # Anything live we do not have is fetched: a new message, or one we somehow missed.
        missing = [i for i, c in changes.items() if not c.deleted and i not in known]
        self.progress.total += len(missing)
        self._fetch_new(missing, count_known=False)
        deleted = [i for i, c in changes.items() if c.deleted]
        with owner_scope(self.owner_id):
            keys = delete_rows(self.owner_id, self.connection.pk, deleted)
            for message_id, change in changes.items():
                row = known.get(message_id)
                if row is not None and not change.deleted and change.ops:
                    self._relabel(row, apply_ops(row.labels, change.ops))
            if cursor:
                merge_state(self.owner_id, self.connection.pk, STATE, {"history_id": cursor})
        delete_objects(self.owner_id, keys)

    def _relabel(self, row, labels: list) -> None:
        if labels == row.labels:
            return
        folder = self.folder_for(labels)
        Message.objects.for_owner(self.owner_id).filter(pk=row.pk).update(
            labels=labels, unread="UNREAD" in labels, folder=folder)


def sync_connection(token: SecretStr, owner_id, connection: Connection) -> Progress:
    """Sync one Gmail connection with a leased access token. Safe to run again at any point."""
    api = GmailApi(token)
    try:
        return GmailSync(api, owner_id, connection, Progress(started=time.monotonic())).run()
    finally:
        api.close()
