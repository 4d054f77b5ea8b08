"""Microsoft 365 / Outlook sync with Microsoft Graph delta queries: one delta link per mail folder.

Folders. Every mail folder (child folders too, named by path: "Inbox/Projects") is a Folder row,
its role (inbox, sent, drafts, trash, junk, archive) taken from Graph's well-known folder names.
Folder has no column for a URL cursor, so the cursors live in Connection.sync_state["graph"]
["folders"][<Graph folder id>] = {"folder": <Folder row id>, "delta_link": …}; keyed by Graph's
id, a renamed folder keeps its row. A folder gone from the listing is removed with its messages.

Messages are requested with immutable ids (Prefer: IdType="ImmutableId"), so a move keeps the id:
it shows up as @removed in the source folder and as a message in the destination. Removals are
therefore applied once every folder has been synced, and only to rows still filed in the folder
that reported them: a moved message (archiving!) is re-filed, never deleted and downloaded again,
whichever folder comes first. Until then they wait in sync_state["graph"]["pending_removals"],
saved with the deltaLink that reported them, so a crash in between loses none.

Per folder: GET /me/mailFolders/{id}/messages/delta?$select=… and @odata.nextLink pages until the
@odata.deltaLink, which the next run starts from. New ids: raw MIME from /me/messages/{id}/$value
(a few at a time), stored in batches, each its own transaction; known ids: isRead → unread,
categories → labels, folder; @removed → a pending removal. The deltaLink is saved in the
transaction of the round's last page. A run that stops midway replays the round from the previous deltaLink: each
step is idempotent and bodies already stored are not fetched again. 410 Gone (delta state
expired) → a fresh round for that folder, after which rows it no longer lists are pending removals.
"""

import logging
import time
from datetime import datetime
from urllib.parse import quote

import requests
from django.conf import settings

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

STATE = "graph"  # the section of Connection.sync_state
PAGE_SIZE = 100  # Prefer: odata.maxpagesize (Graph's default is 10)
BATCH = 50  # bodies fetched, then committed together
SELECT = "id,isRead,categories,conversationId,internetMessageId,receivedDateTime,parentFolderId"
FOLDER_SELECT = "id,displayName,parentFolderId,childFolderCount,totalItemCount"
IMMUTABLE = 'IdType="ImmutableId"'
WELL_KNOWN = {"inbox": "inbox", "sentitems": "sent", "drafts": "drafts", "deleteditems": "trash",
              "junkemail": "junk", "archive": "archive"}


class DeltaExpired(ProviderError):
    """410 Gone: the folder's delta state is no longer known to Graph. A fresh round is needed."""


class FolderGone(ProviderError):
    """404 on a folder: deleted between the listing and its delta round."""


def _segment(graph_id: str) -> str:
    return quote(graph_id, safe="")


class GraphApi(ApiClient):
    """The Graph calls sync needs, with the leased access token as a bearer token."""

    name = "Microsoft"

    def __init__(self, token: SecretStr):
        def session():
            http = requests.Session()
            http.headers.update({"Authorization": f"Bearer {token.reveal()}", "Prefer": IMMUTABLE,
                                 "Accept": "application/json"})
            return http

        super().__init__(settings.GRAPH_API_BASE, session)

    def pages(self, path: str, params: dict):
        """Every item of a collection, following @odata.nextLink."""
        url: str | None = path
        while url:
            page = self.json("GET", url, params=params)
            params = None  # a nextLink carries the query options itself
            yield from (item for item in page.get("value") or [] if isinstance(item, dict))
            url = page.get("@odata.nextLink")

    def folders(self) -> list[dict]:
        """All mail folders, depth first, each with its path ("Inbox/Projects")."""
        found, stack = [], [("/me/mailFolders", "")]
        while stack:
            path, parent = stack.pop()
            for folder in self.pages(path, {"$top": 100, "$select": FOLDER_SELECT}):
                if not folder.get("id"):
                    continue
                name = str(folder.get("displayName") or folder["id"]).replace("/", "∕")
                full = f"{parent}/{name}" if parent else name
                found.append({**folder, "path": full})
                if folder.get("childFolderCount"):
                    stack.append((f"/me/mailFolders/{_segment(folder['id'])}/childFolders", full))
        return found

    def roles(self) -> dict[str, str]:
        """Graph folder id → role, from the well-known names (absent ones, e.g. no Archive, skipped)."""
        roles = {}
        for alias, role in WELL_KNOWN.items():
            response = self.request("GET", f"/me/mailFolders/{alias}", params={"$select": "id"},
                                    passthrough=(404,))
            if response.status_code != 404 and (folder_id := self.decode(response).get("id")):
                roles[str(folder_id)] = role
        return roles

    def delta_page(self, url: str, params: dict | None) -> dict:
        response = self.request("GET", url, params=params, passthrough=(404, 410),
                                headers={"Prefer": f"odata.maxpagesize={PAGE_SIZE}, {IMMUTABLE}"})
        if response.status_code == 410:
            raise DeltaExpired("Microsoft no longer knows where the last sync of a folder stopped.", status=410)
        if response.status_code == 404:
            raise FolderGone("A folder disappeared during the sync.", status=404)
        return self.decode(response)

    def raw(self, message_id: str) -> bytes | None:
        """The message's MIME content, or None if it was deleted since it was listed."""
        response = self.request("GET", f"/me/messages/{_segment(message_id)}/$value", passthrough=(404,))
        return None if response.status_code == 404 else response.content


def _received(item: dict) -> datetime | None:
    try:
        return datetime.fromisoformat(str(item["receivedDateTime"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None


def _labels(item: dict) -> list[str]:
    return [str(c) for c in item.get("categories") or [] if isinstance(c, str)]


def fetched(item: dict, raw: bytes) -> Fetched:
    return Fetched(provider_id=str(item["id"]), raw=raw, labels=_labels(item), unread=not item.get("isRead", False),
                   thread_id=str(item.get("conversationId") or ""),
                   message_id=str(item.get("internetMessageId") or ""), date=_received(item))


def _store_batch(sync: "GraphSync", folder: Folder, items: list[tuple[dict, bytes]]) -> int:
    """Encrypt and store one batch of downloaded messages in one transaction."""
    rows = [build_row(sync.owner_id, sync.connection, folder, fetched(item, raw), "graph") for item, raw in items]
    with owner_scope(sync.owner_id):
        Message.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


class GraphSync:
    """One run over one connection: every folder, one delta round each."""

    def __init__(self, api: GraphApi, owner_id, connection: Connection, progress: Progress):
        self.api, self.owner_id, self.connection, self.progress = api, owner_id, connection, progress
        state = (connection.sync_state or {}).get(STATE) or {}
        self.folder_state: dict = dict(state.get("folders") or {})
        self.roles: dict | None = state.get("roles")
        self.pending: dict[str, str] = dict(state.get("pending_removals") or {})  # message id → Folder row id

    def run(self) -> Progress:
        _save_progress(self.owner_id, self.connection.pk, self.progress.as_state("syncing"))
        if self.roles is None:
            self.roles = self.api.roles()
            merge_state(self.owner_id, self.connection.pk, STATE, {"roles": self.roles})
        listed = self.api.folders()
        for folder in listed:
            try:
                self.sync_folder(folder)
            except FolderGone:
                logger.info("a folder of connection %s vanished during its sync", self.connection.pk)
        self._remove_pending()
        self._forget(set(self.folder_state) - {str(f["id"]) for f in listed})
        self.progress.total = max(self.progress.total, self.progress.done)
        _save_progress(self.owner_id, self.connection.pk, self.progress.as_state("idle"))
        return self.progress

    def _row(self, folder: dict) -> Folder:
        """The Folder row of a Graph folder: found by the id we recorded (renamed if needed), else by path."""
        known = (self.folder_state.get(str(folder["id"])) or {}).get("folder")
        role = (self.roles or {}).get(str(folder["id"]), "")
        path = folder["path"][:500]
        with owner_scope(self.owner_id):
            rows = Folder.objects.for_owner(self.owner_id).filter(connection=self.connection)
            row = rows.filter(pk=known).first() if known else None
            if row is not None and row.name != path and not rows.filter(name=path).exists():
                row.name = path
                row.save(update_fields=["name"])
        return row or folder_row(self.owner_id, self.connection.pk, path, role)

    def sync_folder(self, folder: dict) -> None:
        row = self._row(folder)
        link = (self.folder_state.get(str(folder["id"])) or {}).get("delta_link")
        if link is None:
            self.progress.total += int(folder.get("totalItemCount") or 0)
            self._round(str(folder["id"]), row, None)
            return
        try:
            self._round(str(folder["id"]), row, link)
        except DeltaExpired:
            logger.info("delta state expired for a folder of connection %s: fresh round", self.connection.pk)
            self._round(str(folder["id"]), row, None)

    def _round(self, graph_id: str, folder: Folder, link: str | None) -> None:
        """One delta round, from `link` or (None) from scratch; a fresh round also sweeps."""
        seen: set[str] | None = set() if link is None else None
        url = link or f"/me/mailFolders/{_segment(graph_id)}/messages/delta"
        params = {"$select": SELECT} if link is None else None
        while True:
            page = self.api.delta_page(url, params)
            params = None
            next_link, delta_link = page.get("@odata.nextLink"), page.get("@odata.deltaLink")
            if not next_link and not delta_link:
                raise ProviderError("Microsoft ended a folder's changes without a link to continue from.")
            if next_link:
                self.api.url(next_link)  # refuse a foreign link before any work is done for this page
            self._apply(graph_id, folder, page.get("value") or [], seen, None if next_link else delta_link)
            if not next_link:
                return
            url = next_link

    def _apply(self, graph_id: str, folder: Folder, items: list, seen: set | None, delta_link: str | None) -> None:
        if delta_link is not None:
            self.api.url(delta_link)  # kept only if it points back at Graph
        items = [i for i in items if isinstance(i, dict) and isinstance(i.get("id"), str) and i["id"]]
        removed = {i["id"] for i in items if "@removed" in i}
        live = [i for i in items if "@removed" not in i]
        if seen is not None:
            seen.update(i["id"] for i in live)
        known = stored(self.owner_id, self.connection.pk, [i["id"] for i in live])
        new = [i for i in live if i["id"] not in known]
        if seen is not None:
            self.progress.done += len(known)  # a fresh round counts the folder's whole content
        else:
            self.progress.total += len(new)
        self._fetch_new(folder, new)
        self.pending.update({message_id: str(folder.pk) for message_id in removed})
        for item in live:  # seen alive after a removal was noted (e.g. by a crashed run): it stays
            self.pending.pop(item["id"], None)
        with owner_scope(self.owner_id):
            for item in live:
                if (row := known.get(item["id"])) is not None:
                    self._update(row, folder, item)
            if delta_link is not None:
                if seen is not None:
                    self.pending.update({message_id: str(folder.pk) for message_id in self._unseen(folder, seen)})
                self.folder_state[graph_id] = {"folder": str(folder.pk), "delta_link": delta_link}
                merge_state(self.owner_id, self.connection.pk, STATE,
                            {"folders": self.folder_state, "pending_removals": self.pending})

    def _fetch_new(self, folder: Folder, items: list[dict]) -> None:
        for batch in chunks(items, BATCH):
            raws = self.api.fetch_many(self.api.raw, [i["id"] for i in batch])
            ready = [(item, raw) for item, raw in zip(batch, raws, strict=True) if raw is not None]
            if ready:
                self.progress.done += _store_batch(self, folder, ready)
            _save_progress(self.owner_id, self.connection.pk, self.progress.as_state("syncing"))

    def _update(self, row, folder: Folder, item: dict) -> None:
        labels = _labels(item) if "categories" in item else row.labels
        unread = not item["isRead"] if "isRead" in item else row.unread
        if (labels, unread, row.folder_id) != (row.labels, row.unread, folder.pk):
            Message.objects.for_owner(self.owner_id).filter(pk=row.pk).update(labels=labels, unread=unread,
                                                                              folder=folder)

    def _unseen(self, folder: Folder, seen: set[str]) -> list[str]:
        """After a complete fresh round: the rows this folder no longer lists."""
        have = Message.objects.for_owner(self.owner_id).filter(connection_id=self.connection.pk, folder=folder)
        return [pid for pid in have.values_list("provider_id", flat=True) if pid not in seen]

    def _remove_pending(self) -> None:
        """Every folder has been synced: a removal whose row is still where it was reported is a
        deletion; a moved message has been re-filed by its new folder's round and stays."""
        if not self.pending:
            return
        by_folder: dict[str, list[str]] = {}
        for message_id, folder_pk in self.pending.items():
            by_folder.setdefault(folder_pk, []).append(message_id)
        with owner_scope(self.owner_id):
            keys = []
            for folder_pk, message_ids in by_folder.items():
                keys += delete_rows(self.owner_id, self.connection.pk, message_ids, folder_id=folder_pk)
            self.pending = {}
            merge_state(self.owner_id, self.connection.pk, STATE, {"pending_removals": {}})
        delete_objects(self.owner_id, keys)

    def _forget(self, graph_ids: set[str]) -> None:
        """Folders deleted at Microsoft: their rows, messages and objects go too."""
        for graph_id in graph_ids:
            folder_pk = (self.folder_state.pop(graph_id, None) or {}).get("folder")
            if folder_pk is None:
                continue
            with owner_scope(self.owner_id):
                query = Message.objects.for_owner(self.owner_id).filter(folder_id=folder_pk)
                keys = [k for k in query.values_list("blob_key", flat=True) if k]
                Folder.objects.for_owner(self.owner_id).filter(pk=folder_pk, connection=self.connection).delete()
                merge_state(self.owner_id, self.connection.pk, STATE, {"folders": self.folder_state})
            delete_objects(self.owner_id, keys)


def sync_connection(token: SecretStr, owner_id, connection: Connection) -> Progress:
    """Sync one Microsoft connection with a leased access token. Safe to run again at any point."""
    api = GraphApi(token)
    try:
        return GraphSync(api, owner_id, connection, Progress(started=time.monotonic())).run()
    finally:
        api.close()
