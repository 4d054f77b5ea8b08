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
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from aiemaily.ops.outage import is_transient_outage
from aiemaily.ownership.binding import owner_scope
from mail import blobstore
from mail.assistant.services import triage_new
from mail.models import Connection, Folder, Message
from mail.parsing import header_thread_id, parse
from mail.sync import parts

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


def _row(owner_id, connection: Connection, folder: Folder, uidvalidity: int, uid: int, data: dict,
         now: datetime) -> Message:
    raw = data.get(b"BODY[]") or b""
    parsed = parse(raw)
    key = blobstore.put(owner_id, ("messages", str(connection.pk), f"{folder.pk}-{uidvalidity}-{uid}"), raw)
    flags = [f.decode("utf-8", "replace") if isinstance(f, bytes) else str(f) for f in data.get(b"FLAGS", ())]
    # Every column with a default is given (the id, the batch's time, the sealed columns that
    # seal_all fills before the insert): the model's defaults cost a tenth of a stored message's
    # CPU when looked up row by row.
    return Message(
        id=uuid.uuid4(), owner_id=owner_id, connection_id=connection.pk, folder_id=folder.pk,
        uidvalidity=uidvalidity, uid=uid, message_id=parsed.message_id, from_addr=parsed.from_addr,
        to_addrs=parsed.to_addrs, cc_addrs=parsed.cc_addrs, subject=parsed.subject, date=parsed.date or now,
        flags=flags, unread="\\Seen" not in flags, size=data.get(b"RFC822.SIZE", len(raw)), snippet=parsed.snippet,
        blob_key=key, parse_error=parsed.parse_error, thread_id=header_thread_id(parsed), created_at=now,
        subject_ct=None, from_ct=None, to_ct=None, cc_ct=None, snippet_ct=None,
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


def _store_batch(owner_id, connection: Connection, folder: Folder, uidvalidity: int, fetched: dict, *,
                 advance: bool = True) -> int:
    """Store a fetched batch; `advance`: move the folder's cursor to its last UID (not for a part of a
    sync cut into parts, whose cursor moves once every part is stored: mail/sync/parts.py)."""
    rows, now = [], timezone.now()
    for uid, data in sorted(fetched.items()):
        try:
            rows.append(_row(owner_id, connection, folder, uidvalidity, uid, data, now))
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
        if advance:
            Folder.objects.for_owner(owner_id).filter(pk=folder.pk).update(last_uid=max(fetched))
        if connection.ai_triage:  # opt-in per mailbox: the assistant triages what just arrived
            triage_new(owner_id=owner_id, message_ids=[row.pk for row in rows])
    if advance:
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
            uidvalidity=uidvalidity, last_uid=0, highestmodseq=None, uidnext=None, parts={})
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


def _stored_uids(owner_id, folder: Folder, above: int, upto: int | None = None) -> set[int]:
    """UIDs above the cursor that are stored already: by a sync cut into parts that stopped before its
    end (mail/sync/parts.py), or by one running at the same time."""
    with owner_scope(owner_id):
        stored = Message.objects.for_owner(owner_id).filter(folder=folder, uid__gt=above)
        if upto is not None:
            stored = stored.filter(uid__lte=upto)
        return set(stored.values_list("uid", flat=True))


def sync_part(client, owner_id, connection: Connection, folder: Folder, uidvalidity: int, plan_id: str,
              index: int, part: dict, report=None) -> None:
    """Store the messages of one claimed part (its folder selected on `client`), beating after each
    batch, then mark it done. `report(plan)` is told of every batch (the coordinator's progress)."""
    first, last = int(part["first"]), int(part["last"])  # numbers only ever reach the IMAP command
    wanted = [uid for uid in sorted(client.search(["UID", f"{first}:{last}"])) if first <= uid <= last]
    stored = _stored_uids(owner_id, folder, first - 1, last)
    uids = [uid for uid in wanted if uid not in stored]
    with closing(_prefetched(client, _batches(client, uids))) as fetches:
        for fetched in fetches:
            count = _store_batch(owner_id, connection, folder, uidvalidity, fetched, advance=False) if fetched else 0
            plan = parts.part_beat(owner_id, folder.pk, plan_id, index, stored=count)
            if plan is None:
                return  # a later sync replaced the plan (or the folder is gone): it does the rest
            if report is not None:
                report(plan)
    parts.part_done(owner_id, folder.pk, plan_id, index)


def sync_parts_while_any(client, owner_id, connection: Connection, folder: Folder, uidvalidity: int, plan_id: str,
                         claimed: tuple[int, dict] | None = None, *, holder: str = "", report=None) -> int:
    """Sync `claimed` (if given), then every part left to claim, lowest first, on this one session
    (a process that is free takes the next part rather than wait for its own task). Returns the
    number of parts synced."""
    synced = 0
    while claimed is not None or (claimed := parts.part_claim(owner_id, folder.pk, plan_id, holder=holder)):
        try:
            sync_part(client, owner_id, connection, folder, uidvalidity, plan_id, *claimed, report=report)
        except Exception as exc:
            if not is_transient_outage(exc):  # with the database away, the part's beat goes stale instead
                parts.part_release(owner_id, folder.pk, plan_id, claimed[0], holder=holder)
            raise
        claimed, synced = None, synced + 1
    return synced


# How often the coordinator of a sync cut into parts looks at the parts others hold.
PART_WAIT_SECONDS = 0.25


def _wait_for_parts() -> None:
    time.sleep(PART_WAIT_SECONDS)


def _sync_in_parts(client, owner_id, connection: Connection, folder: Folder, uidvalidity: int, runs: list,
                   progress: Progress, queue_part) -> None:
    """Coordinate a sync cut into parts (mail/sync/parts.py): queue the others, claim parts lowest
    first, then wait for the rest and move the cursor."""
    plan = parts.plan_write(owner_id, folder.pk, uidvalidity=uidvalidity, runs=runs)
    first = parts.part_claim(owner_id, folder.pk, plan["id"], 0)  # this session's, before anyone else is told
    for index in range(1, len(runs)):
        queue_part(folder.pk, plan["id"], index)
    base = progress.done

    def report(current):
        progress.done = base + parts.stored(current)
        _save_progress(owner_id, connection.pk, progress.as_state("syncing"))

    while True:
        sync_parts_while_any(client, owner_id, connection, folder, uidvalidity, plan["id"], first, report=report)
        first = None
        finished = parts.plan_finish(owner_id, folder.pk, plan["id"])
        if finished is not None:
            progress.done = base + finished
            break
        _wait_for_parts()  # parts held by other processes: wait, or take one whose claimant died
        report(parts.plan_read(owner_id, folder.pk, plan["id"]))
    with owner_scope(owner_id):
        cursor = Folder.objects.for_owner(owner_id).filter(pk=folder.pk).values_list("last_uid", flat=True).first()
    folder.last_uid = cursor if cursor is not None else folder.last_uid  # None: the folder was deleted meanwhile


def sync_folder(client, owner_id, connection: Connection, folder: Folder, progress: Progress, condstore: bool,
                queue_part=None) -> None:
    """Sync one folder. `queue_part(folder_id, plan_id, index)`, when given, hands parts of a large
    sync to the sync pool's other processes (mail/sync/parts.py); without it one process does it all."""
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
    if new_uids:
        stored = _stored_uids(owner_id, folder, folder.last_uid)
        new_uids = [uid for uid in new_uids if uid not in stored]
    progress.total += len(new_uids)
    _save_progress(owner_id, connection.pk, progress.as_state("syncing"))
    runs = parts.split(new_uids, parts=settings.AIEMAILY_SYNC_PARTS, minimum=settings.AIEMAILY_SYNC_PART_MIN)
    if queue_part is not None and len(runs) > 1:
        _sync_in_parts(client, owner_id, connection, folder, uidvalidity, runs, progress, queue_part)
    else:
        # closed (and its thread joined) on any exit
        with closing(_prefetched(client, _batches(client, new_uids))) as fetches:
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


def sync_connection(client, owner_id, connection: Connection, folders: list[str] | None = None,
                    queue_part=None) -> Progress:
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
        sync_folder(client, owner_id, connection, folder, progress, condstore, queue_part)
    _save_progress(owner_id, connection.pk, progress.as_state("idle"))
    return progress
