"""IMAP sync into encrypted object storage: incremental, resumable, cheap when nothing changed.

Per folder, the cursors (UIDVALIDITY, last stored UID, HIGHESTMODSEQ) live in PostgreSQL and move
only after a batch is committed, so a sync killed at any point resumes where it stopped; a
re-fetched message is skipped by a unique constraint, never duplicated. A UIDVALIDITY change
means the server renumbered the folder: its messages are dropped and fetched again.

New mail: UID FETCH of everything above the last stored UID, in pipelined batches.
Flag changes: with CONDSTORE, FETCH FLAGS CHANGEDSINCE <highestmodseq> (only what changed).
Expunges: UID SEARCH ALL against the stored UIDs, skipped when nothing can have changed
(same UIDNEXT, same HIGHESTMODSEQ, same message count).

Network I/O runs outside database transactions; each batch is written in its own short
transaction bound to the owner.
"""

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass

from django.db import DatabaseError
from django.utils import timezone

from aiemaily.ops.outage import is_transient_outage
from aiemaily.ownership.binding import owner_scope
from mail import blobstore
from mail.assistant.services import triage_new
from mail.models import Connection, Folder, Message
from mail.parsing import header_thread_id, parse

logger = logging.getLogger(__name__)

BATCH = 500
# At most this many bytes of message per fetched batch (a message larger than that is a batch of its
# own): with the batch fetched ahead (`_prefetched`), two batches are in memory at most, whatever
# the mailbox holds (`_batches`).
BATCH_BYTES = 32 * 1024 * 1024
SIZE_CHUNK = 5000
FETCH_ITEMS = [b"BODY.PEEK[]", b"FLAGS", b"RFC822.SIZE"]
ROLES = {b"\\Sent": "sent", b"\\Archive": "archive", b"\\Trash": "trash", b"\\Drafts": "drafts",
         b"\\Junk": "junk", b"\\All": "all"}


@dataclass
class Progress:
    done: int = 0
    total: int = 0
    started: float = 0.0

    def as_state(self, state: str, last_error: str = "") -> dict:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return {"state": state, "done": self.done, "total": self.total, "rate": round(self.done / elapsed, 1),
                "last_error": last_error, "updated_at": timezone.now().isoformat()}


def _save_progress(owner_id, connection_id, state: dict) -> None:
    """Merge `state` into the connection's sync state; a mailbox deleted meanwhile is left alone."""
    with owner_scope(owner_id):
        connection = Connection.objects.for_owner(owner_id).select_for_update().filter(pk=connection_id).first()
        if connection is None:
            return
        merged = {**connection.sync_state, **state}
        Connection.objects.for_owner(owner_id).filter(pk=connection_id).update(sync_state=merged)


def _folder_row(owner_id, connection_id, name: str, flags) -> Folder:
    role = "inbox" if name.upper() == "INBOX" else next((ROLES[f] for f in flags if f in ROLES), "")
    with owner_scope(owner_id):
        folder, _ = Folder.objects.for_owner(owner_id).get_or_create(
            owner_id=owner_id, connection_id=connection_id, name=name, defaults={"role": role})
    return folder


def _row(owner_id, connection: Connection, folder: Folder, uidvalidity: int, uid: int, data: dict) -> Message:
    raw = data.get(b"BODY[]") or b""
    parsed = parse(raw)
    key = blobstore.put(owner_id, ("messages", str(connection.pk), f"{folder.pk}-{uidvalidity}-{uid}"), raw)
    flags = [f.decode("utf-8", "replace") if isinstance(f, bytes) else str(f) for f in data.get(b"FLAGS", ())]
    return Message(
        owner_id=owner_id, connection=connection, folder=folder, uidvalidity=uidvalidity, uid=uid,
        message_id=parsed.message_id, from_addr=parsed.from_addr, to_addrs=parsed.to_addrs,
        cc_addrs=parsed.cc_addrs, subject=parsed.subject, date=parsed.date or timezone.now(), flags=flags,
        unread="\\Seen" not in flags, size=data.get(b"RFC822.SIZE", len(raw)), snippet=parsed.snippet,
        blob_key=key, parse_error=parsed.parse_error, thread_id=header_thread_id(parsed),
    )


def _unreadable_row(owner_id, connection: Connection, folder: Folder, uidvalidity: int, uid: int, data: dict,
                    error: Exception) -> Message:
    """A message that could not be read or stored normally is still listed, with why, so one mail
    never stops a mailbox (and the next sync does not retry the same batch for ever)."""
    raw = data.get(b"BODY[]") or b""
    try:
        key = blobstore.put(owner_id, ("messages", str(connection.pk), f"{folder.pk}-{uidvalidity}-{uid}"), raw)
    except blobstore.BlobError:
        key = ""
    return Message(owner_id=owner_id, connection=connection, folder=folder, uidvalidity=uidvalidity, uid=uid,
                   date=timezone.now(), size=len(raw), blob_key=key,
                   parse_error=f"could not be read: {type(error).__name__}"[:200])


def _store_batch(owner_id, connection: Connection, folder: Folder, uidvalidity: int, fetched: dict) -> int:
    rows = []
    for uid, data in sorted(fetched.items()):
        try:
            rows.append(_row(owner_id, connection, folder, uidvalidity, uid, data))
        except (ValueError, TypeError, LookupError, AttributeError, UnicodeError) as exc:
            logger.warning("message uid %s of connection %s could not be read: %s", uid, connection.pk,
                           type(exc).__name__)
            rows.append(_unreadable_row(owner_id, connection, folder, uidvalidity, uid, data, exc))
    try:
        with owner_scope(owner_id):
            Message.objects.bulk_create(rows, ignore_conflicts=True)
    except DatabaseError as exc:
        if is_transient_outage(exc):
            raise  # the database is away, not refusing a row: the task retries the whole batch
        # One row the database refuses must not lose the batch: insert one by one, and list a
        # refused row with its error instead.
        rows = [_insert_one(owner_id, connection, folder, uidvalidity, row, fetched[row.uid]) for row in rows]
    with owner_scope(owner_id):
        Folder.objects.for_owner(owner_id).filter(pk=folder.pk).update(last_uid=max(fetched))
        if connection.ai_triage:  # opt-in per mailbox: the assistant triages what just arrived
            triage_new(owner_id=owner_id, message_ids=[row.pk for row in rows])
    folder.last_uid = max(fetched)
    return len(rows)


def _insert_one(owner_id, connection, folder, uidvalidity, row: Message, data: dict) -> Message:
    try:
        with owner_scope(owner_id):
            Message.objects.bulk_create([row], ignore_conflicts=True)
        return row
    except DatabaseError as exc:
        if is_transient_outage(exc):
            # Not this message's fault: listing it as unreadable would keep a good message out for good.
            raise
        logger.warning("message uid %s of connection %s was refused by the database: %s", row.uid, connection.pk,
                       type(exc).__name__)
        fallback = _unreadable_row(owner_id, connection, folder, uidvalidity, row.uid, data, exc)
        with owner_scope(owner_id):
            Message.objects.bulk_create([fallback], ignore_conflicts=True)
        return fallback


def _reset_folder(owner_id, folder: Folder, uidvalidity: int) -> None:
    with owner_scope(owner_id):
        keys = list(Message.objects.for_owner(owner_id).filter(folder=folder).values_list("blob_key", flat=True))
        Message.objects.for_owner(owner_id).filter(folder=folder).delete()
        Folder.objects.for_owner(owner_id).filter(pk=folder.pk).update(
            uidvalidity=uidvalidity, last_uid=0, highestmodseq=None, uidnext=None)
    for key in keys:
        if key:
            blobstore.delete(owner_id, key)
    folder.uidvalidity, folder.last_uid, folder.highestmodseq, folder.uidnext = uidvalidity, 0, None, None


def _apply_flag_changes(owner_id, folder: Folder, changes: dict) -> None:
    with owner_scope(owner_id):
        for uid, data in changes.items():
            flags = [f.decode("utf-8", "replace") if isinstance(f, bytes) else str(f) for f in data.get(b"FLAGS", ())]
            Message.objects.for_owner(owner_id).filter(folder=folder, uid=uid).update(
                flags=flags, unread="\\Seen" not in flags)


def _fetch_flags(client, uids: list[int]) -> dict:
    # Explicit UID lists in batches: imapclient keeps only the responses for the ids it asked for.
    flags = {}
    for start in range(0, len(uids), BATCH):
        flags.update(client.fetch(uids[start:start + BATCH], [b"FLAGS"]))
    return flags


def _apply_expunges(owner_id, folder: Folder, server_uids: set[int]) -> int:
    with owner_scope(owner_id):
        stored = Message.objects.for_owner(owner_id).filter(folder=folder)
        gone = [(pk, key) for pk, uid, key in stored.values_list("pk", "uid", "blob_key") if uid not in server_uids]
        Message.objects.for_owner(owner_id).filter(pk__in=[pk for pk, _ in gone]).delete()
    for _, key in gone:
        if key:
            blobstore.delete(owner_id, key)
    return len(gone)


def _batches(client, uids: list[int]) -> list[list[int]]:
    """`uids` (ascending) cut into batches of at most BATCH messages and BATCH_BYTES bytes.

    Only the sizes of messages above BATCH_BYTES / BATCH are asked for (SEARCH LARGER, then FETCH
    RFC822.SIZE of those): any other message counts as that much, so a batch of them is within the
    bound anyway, and a mailbox of small messages costs one SEARCH instead of a size per message
    (parsing 10,000 FETCH responses cost a tenth of an initial sync)."""
    if not uids:
        return []
    typical, wanted = BATCH_BYTES // BATCH, set(uids)
    larger = sorted(uid for uid in client.search(["UID", f"{uids[0]}:{uids[-1]}", "LARGER", str(typical)])
                    if uid in wanted)
    sizes: dict = {}
    for start in range(0, len(larger), SIZE_CHUNK):
        sizes.update(client.fetch(larger[start:start + SIZE_CHUNK], [b"RFC822.SIZE"]))
    batches, current, current_bytes = [], [], 0
    for uid in uids:
        size = int(sizes[uid].get(b"RFC822.SIZE", typical)) if uid in sizes else typical
        if current and (len(current) >= BATCH or current_bytes + size > BATCH_BYTES):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(uid)
        current_bytes += size
    if current:
        batches.append(current)
    return batches


def _prefetched(client, batches: list[list[int]]):
    """client.fetch(batch) for each batch in turn, the next one fetched on a thread while the caller
    stores this one: the server's work and the transfer overlap ours (an initial sync is otherwise
    idle while Dovecot reads and sends a batch). One batch ahead at most, and the IMAP connection is
    only ever used by one thread at a time: the caller does not touch it until the loop is over."""
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imap-prefetch") as pool:
        pending = pool.submit(client.fetch, batches[0], FETCH_ITEMS)
        for following in [*batches[1:], None]:
            fetched = pending.result()
            pending = pool.submit(client.fetch, following, FETCH_ITEMS) if following is not None else None
            yield fetched
        # Leaving early (the caller failed): the `with` waits for a fetch still running before the
        # connection is used again or closed.


def sync_folder(client, owner_id, connection: Connection, folder: Folder, progress: Progress, condstore: bool) -> None:
    info = client.select_folder(folder.name, readonly=True)
    uidvalidity = int(info[b"UIDVALIDITY"])
    uidnext = int(info.get(b"UIDNEXT", 0))
    exists = int(info.get(b"EXISTS", 0))
    modseq = int(info[b"HIGHESTMODSEQ"]) if condstore and b"HIGHESTMODSEQ" in info else None
    if folder.uidvalidity is not None and folder.uidvalidity != uidvalidity:
        logger.info("UIDVALIDITY changed for a folder of connection %s: refetching it", connection.pk)
        _reset_folder(owner_id, folder, uidvalidity)
    with owner_scope(owner_id):
        stored_count = Message.objects.for_owner(owner_id).filter(folder=folder).count()
    unchanged = (folder.uidvalidity == uidvalidity and folder.uidnext == uidnext and modseq is not None
                 and folder.highestmodseq == modseq and stored_count == exists)
    if unchanged:
        return

    new_uids = [] if exists == 0 else sorted(u for u in client.search(["UID", f"{folder.last_uid + 1}:*"])
                                             if u > folder.last_uid)
    progress.total += len(new_uids)
    _save_progress(owner_id, connection.pk, progress.as_state("syncing"))
    batches = _batches(client, new_uids)
    with closing(_prefetched(client, batches)) as fetches:  # closed (and its thread joined) on any exit
        for fetched in fetches:
            if fetched:
                progress.done += _store_batch(owner_id, connection, folder, uidvalidity, fetched)
            _save_progress(owner_id, connection.pk, progress.as_state("syncing"))

    if folder.highestmodseq and modseq and modseq != folder.highestmodseq:
        # CONDSTORE: only the messages whose mod-sequence moved (SEARCH MODSEQ, RFC 7162).
        changed = [u for u in client.search(["MODSEQ", str(folder.highestmodseq + 1)]) if u <= folder.last_uid]
        _apply_flag_changes(owner_id, folder, _fetch_flags(client, changed))
    elif not condstore and folder.uidvalidity == uidvalidity:
        with owner_scope(owner_id):
            known = list(Message.objects.for_owner(owner_id).filter(folder=folder).values_list("uid", flat=True))
        _apply_flag_changes(owner_id, folder, _fetch_flags(client, sorted(known)))
    if stored_count + len(new_uids) != exists:
        _apply_expunges(owner_id, folder, set(client.search(["ALL"])))

    with owner_scope(owner_id):
        Folder.objects.for_owner(owner_id).filter(pk=folder.pk).update(
            uidvalidity=uidvalidity, uidnext=uidnext, highestmodseq=modseq, synced_at=timezone.now())


def sync_connection(client, owner_id, connection: Connection, folders: list[str] | None = None) -> Progress:
    progress = Progress(started=time.monotonic())
    condstore = b"CONDSTORE" in client.capabilities()
    if condstore:
        client.enable("CONDSTORE")
    listed = client.list_folders()
    for flags, _, name in listed:
        if b"\\Noselect" in flags or b"\\NonExistent" in flags:
            continue
        if folders is not None and name not in folders:
            continue
        folder = _folder_row(owner_id, connection.pk, name, flags)
        sync_folder(client, owner_id, connection, folder, progress, condstore)
    _save_progress(owner_id, connection.pk, progress.as_state("idle"))
    return progress
