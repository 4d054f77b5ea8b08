"""A large folder sync cut into parts (mail/sync/parts.py) against real Dovecot: every message stored
once whoever stores it, the folder's cursor never ahead of what is stored, nothing waiting for a
process that is not there (the coordinator takes every part nobody took, and a part whose claimant
stopped beating), an interrupted run resumed without refetching what is stored, and a part task
for another owner, a replaced plan or with a lease that does not open doing nothing."""

import re
import time
import uuid

import pytest
from django.utils import timezone

from aiemaily.ownership.binding import owner_scope
from mail import services
from mail.models import Folder, Message
from mail.sync import imap as sync_imap
from mail.sync import parts
from mail.tasks import connection_sync, connection_sync_part
from secrets_vault.tasks import leases_issue
from tests.harness.factories import UserFactory
from tests.harness.mailboxes import imap_mailbox
from tests.harness.mailservers import MALFORMED, sample_messages
from tests.harness.object_store import objects_dir
from tests.harness.processes import Worker, mail_worker_env

__all__ = ["objects_dir"]

SEEDED = 300
STORED = SEEDED + len(MALFORMED)  # sample_messages appends the malformed corpus


@pytest.fixture
def part_settings(settings):
    settings.AIEMAILY_SYNC_PARTS, settings.AIEMAILY_SYNC_PART_MIN = 4, 50
    return settings


def _mailbox(dovecot, smtp_server, count=SEEDED):
    owner = UserFactory()
    connection, user = imap_mailbox(owner, dovecot, smtp_server, verified_at=timezone.now())
    dovecot.seed(user, sample_messages(count))
    return owner, connection


def _leases(owner, connection):
    return leases_issue(str(owner.pk), str(connection.pk), {"imap_password": str(connection.imap_secret_id)})


def _sync(owner, connection):
    return connection_sync(_leases(owner, connection), owner_id=str(owner.pk), connection_id=str(connection.pk))


def _uids(owner) -> list[int]:
    with owner_scope(owner):
        return sorted(Message.objects.for_owner(owner).values_list("uid", flat=True))


def _folder(owner) -> Folder:
    with owner_scope(owner):
        return Folder.objects.for_owner(owner).get(name="INBOX")


class Queued:
    """The part tasks a sync hands to the pool, kept instead of published (no worker runs here)."""

    def __init__(self, monkeypatch, then=None):
        self.calls, self.then = [], then
        monkeypatch.setattr(connection_sync_part, "apply_async", self.apply_async)

    def apply_async(self, args):
        self.calls.append(args)
        if self.then is not None:
            self.then(*args)


def _first_part_task_after_the_plan(monkeypatch, owner, connection) -> tuple:
    """Run a sync that stops as soon as its plan is written and its part tasks are queued (kept,
    not published): the arguments of the first part task."""
    queued = Queued(monkeypatch)

    def stop_after_plan(*args, **kwargs):
        raise SystemExit("stopped once the plan was written")
    monkeypatch.setattr(sync_imap, "sync_parts_while_any", stop_after_plan)
    with pytest.raises(SystemExit):
        _sync(owner, connection)
    return queued.calls[0]


def _cursor_at_every_beat(monkeypatch, owner) -> list[int]:
    """The folder's cursor ("every UID up to this one is stored") as it was at every beat of every part."""
    beat, cursors = parts.part_beat, []

    def recording_beat(*args, **kwargs):
        cursors.append(_folder(owner).last_uid)
        return beat(*args, **kwargs)
    monkeypatch.setattr(parts, "part_beat", recording_beat)
    return cursors


pytestmark = pytest.mark.django_db(databases=["default", "vault"])


def test_the_new_uids_are_cut_into_contiguous_parts_of_a_minimum_size():
    uids = list(range(1, 1001))
    assert parts.split(uids, parts=4, minimum=100) == [uids[0:250], uids[250:500], uids[500:750], uids[750:]]
    assert parts.split(uids, parts=16, minimum=300) == [uids[0:334], uids[334:668], uids[668:]]
    assert parts.split(uids, parts=4, minimum=1000) == [uids]
    assert parts.split(uids, parts=1, minimum=1) == [uids]
    assert parts.split([], parts=4, minimum=1) == []


def test_a_sync_nobody_helps_stores_every_part_itself_once(part_settings, mail_settings, dovecot, smtp_server,
                                                           objects_dir, monkeypatch):
    owner, connection = _mailbox(dovecot, smtp_server)
    queued = Queued(monkeypatch)
    checked = _cursor_at_every_beat(monkeypatch, owner)
    result = _sync(owner, connection)
    assert result == {"connection_id": str(connection.pk), "status": "synced", "messages": STORED}
    uids = _uids(owner)
    assert len(uids) == len(set(uids)) == STORED
    folder = _folder(owner)
    assert folder.last_uid == max(uids) and folder.parts == {}
    assert checked and all(cursor == 0 for cursor in checked)  # the cursor moved only once all parts were in
    # Three parts were handed to the pool; their tasks, run late, find the plan over and do nothing.
    assert [args[5] for args in queued.calls] == [1, 2, 3]
    for args in queued.calls:
        assert connection_sync_part(*args)["status"] == "taken"
    assert _uids(owner) == uids
    # The next sync has nothing to fetch.
    assert _sync(owner, connection)["messages"] == 0


def test_parts_another_process_takes_are_not_stored_twice(part_settings, mail_settings, dovecot, smtp_server,
                                                          objects_dir, monkeypatch):
    """The first queued part runs at once, as a free process would, and goes on to every part left;
    the coordinator claimed the first part before it told anyone, and stores that one."""
    owner, connection = _mailbox(dovecot, smtp_server)
    results, helping = [], []

    def run_first_queued(*args):
        if not results:
            helping.append(True)
            results.append(connection_sync_part(*args))
            helping.clear()
    Queued(monkeypatch, then=run_first_queued)
    stored_by = {"coordinator": [], "helper": []}
    store = sync_imap._store_batch

    def counting_store(*args, **kwargs):
        stored_by["helper" if helping else "coordinator"].extend(args[4])
        return store(*args, **kwargs)
    monkeypatch.setattr(sync_imap, "_store_batch", counting_store)
    cursors = _cursor_at_every_beat(monkeypatch, owner)
    assert _sync(owner, connection)["messages"] == STORED
    assert results == [{"connection_id": str(connection.pk), "status": "synced", "parts": 3}]
    uids = _uids(owner)
    # Parts 1-3 by the helper, part 0 by the coordinator; each message fetched and stored once.
    assert stored_by["coordinator"] == uids[:len(stored_by["coordinator"])] and stored_by["helper"]
    assert sorted(stored_by["coordinator"] + stored_by["helper"]) == uids
    assert len(uids) == len(set(uids)) == STORED
    assert set(cursors) == {0} and _folder(owner).last_uid == max(uids)


def test_a_part_whose_claimant_stopped_beating_is_taken_over(part_settings, mail_settings, dovecot, smtp_server,
                                                             objects_dir, monkeypatch):
    part_settings.AIEMAILY_SYNC_PART_STALE_SECONDS = 2
    owner, connection = _mailbox(dovecot, smtp_server)
    held = []

    def claim_and_die(leases, owner_id, connection_id, folder_id, plan_id, index):
        if index == 2:  # a process claims part 2, then is killed before its first batch
            held.append(parts.part_claim(owner_id, folder_id, plan_id, index, holder="killed-task"))
    Queued(monkeypatch, then=claim_and_die)
    started = time.monotonic()

    def short_bounded_wait():
        assert time.monotonic() - started < 30, "the coordinator waits for a part nobody is storing"
        time.sleep(0.05)
    monkeypatch.setattr(sync_imap, "_wait_for_parts", short_bounded_wait)
    assert _sync(owner, connection)["messages"] == STORED
    assert held and held[0][0] == 2
    assert time.monotonic() - started >= 2  # not before the claim was stale
    uids = _uids(owner)
    assert len(uids) == len(set(uids)) == STORED and _folder(owner).last_uid == max(uids)


def test_an_interrupted_sync_in_parts_resumes_without_refetching_what_is_stored(
        part_settings, mail_settings, dovecot, smtp_server, objects_dir, monkeypatch):
    owner, connection = _mailbox(dovecot, smtp_server)
    Queued(monkeypatch)
    store, calls = sync_imap._store_batch, []

    def store_then_die(*args, **kwargs):
        calls.append(sorted(args[4]))
        if len(calls) == 3:
            raise SystemExit("the worker was killed")  # not an Exception: nothing catches it on the way up
        return store(*args, **kwargs)
    monkeypatch.setattr(sync_imap, "_store_batch", store_then_die)
    with pytest.raises(SystemExit):
        _sync(owner, connection)
    stored_before = _uids(owner)
    assert 0 < len(stored_before) < STORED
    assert _folder(owner).last_uid == 0  # the cursor did not move for parts that were not all in

    monkeypatch.setattr(sync_imap, "_store_batch", store)
    fetched = []
    monkeypatch.setattr(sync_imap, "_store_batch", lambda *a, **k: fetched.extend(a[4]) or store(*a, **k))
    result = _sync(owner, connection)
    assert result["messages"] == STORED - len(stored_before)
    assert not set(fetched) & set(stored_before)  # what was stored was not fetched again
    uids = _uids(owner)
    assert len(uids) == len(set(uids)) == STORED and _folder(owner).last_uid == max(uids)


def test_a_part_task_for_another_owner_or_an_old_plan_does_nothing(part_settings, mail_settings, dovecot,
                                                                   smtp_server, objects_dir, monkeypatch, stranger):
    owner, connection = _mailbox(dovecot, smtp_server)
    leases, owner_id, connection_id, folder_id, plan_id, index = _first_part_task_after_the_plan(
        monkeypatch, owner, connection)
    # Another owner's id with this mailbox and folder: nothing is found under that owner.
    assert connection_sync_part(leases, str(stranger.pk), connection_id, folder_id, plan_id, index)["status"] == "gone"
    # A plan since replaced.
    replaced = connection_sync_part(leases, owner_id, connection_id, folder_id, uuid.uuid4().hex, index)
    assert replaced["status"] == "taken"
    # A lease that does not open (tampered): the part is given back, nothing stored.
    tampered = {"imap_password": {**leases["imap_password"], "sealed": leases["imap_password"]["sealed"][::-1]}}
    assert connection_sync_part(tampered, owner_id, connection_id, folder_id, plan_id, index)["status"] == "released"
    assert _folder(owner).parts["parts"][index]["state"] == parts.QUEUED
    assert _uids(owner) == []
    with owner_scope(stranger):
        assert not Message.objects.for_owner(stranger).exists()


@pytest.mark.django_db(transaction=True, databases=["default", "vault"])
def test_two_worker_processes_share_a_large_sync(tmp_path, test_ca, mail_settings, dovecot, smtp_server,
                                                monkeypatch):
    """Real vault and sync workers (two sync processes, as the Procfile runs them): "Sync now" on a
    mailbox of a thousand messages cut into parts; the pool's other process stores parts too, every
    message is stored once, and the sync ends idle with all of them counted."""
    from rest_framework.test import APIClient

    from tests.conftest import issue_tokens

    # Marked verified already: with commits real here, creating the mailbox would otherwise queue its
    # check, which the workers run once started (and which fails on this SMTP login, leaving the
    # mailbox unable to sync) before "Sync now" is pressed.
    monkeypatch.setattr(services, "_queue_verification", lambda connection: None)
    owner, connection = _mailbox(dovecot, smtp_server, count=1000)
    stored = 1000 + len(MALFORMED)
    extra = {**mail_worker_env(test_ca), "AIEMAILY_SYNC_PARTS": "8", "AIEMAILY_SYNC_PART_MIN": "100",
             "AIEMAILY_OBJECTS_DIR": str(tmp_path / "objects")}
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(client, owner)["access"])
    workers = [Worker("vault", "vault", tmp_path / "vault.log", extra),
               Worker("sync", "sync", tmp_path / "sync.log", extra, processes=2)]
    try:
        for worker in workers:
            worker.wait_ready()
        assert client.post(f"/api/v1/connections/{connection.pk}/sync").status_code == 202
        deadline = time.monotonic() + 180
        while True:
            sync = client.get(f"/api/v1/connections/{connection.pk}").json()["sync"]
            if sync["state"] == "idle" and sync["done"] == stored:
                break
            assert sync["state"] != "error", sync
            assert time.monotonic() < deadline, sync
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker.stop()
    log = workers[1].output()
    # The pool's other process stored parts too: a part task that found work to do.
    assert sum(int(n) for n in re.findall(r"stored (\d+) parts of a sync of connection", log)) >= 1, log[-3000:]
    assert "Traceback" not in log
    uids = _uids(owner)
    assert len(uids) == len(set(uids)) == stored
    assert _folder(owner).last_uid == max(uids) and _folder(owner).parts == {}
    listed = client.get("/api/v1/messages?limit=100").json()["results"]
    assert len(listed) == 100 and len({m["id"] for m in listed}) == 100


def test_a_part_task_finding_the_folder_renumbered_gives_its_part_back(part_settings, mail_settings, dovecot,
                                                                        smtp_server, objects_dir, monkeypatch):
    owner, connection = _mailbox(dovecot, smtp_server)
    leases, owner_id, connection_id, folder_id, plan_id, index = _first_part_task_after_the_plan(
        monkeypatch, owner, connection)
    # The plan was made under another UIDVALIDITY than the server's now (the folder was renumbered).
    folder = _folder(owner)
    renumbered = {**folder.parts, "uidvalidity": folder.parts["uidvalidity"] + 1}
    with owner_scope(owner):
        Folder.objects.for_owner(owner).filter(pk=folder.pk).update(parts=renumbered)
    result = connection_sync_part(leases, owner_id, connection_id, folder_id, plan_id, index)
    assert result["status"] == "renumbered"
    assert _folder(owner).parts["parts"][index]["state"] == parts.QUEUED
    assert _uids(owner) == []
