"""IMAP sync against real Dovecot: every message (malformed ones too) stored encrypted and listed;
incremental runs pick up new mail, flag changes and expunges; an interrupted sync resumes with
nothing lost or duplicated; a UIDVALIDITY change refetches the folder."""

import imaplib
import ssl

import pytest

from aiemaily.ownership.binding import owner_scope
from mail import blobstore
from mail.models import Connection, Folder, Message
from mail.sync import imap as sync_imap
from mail.tasks import connection_sync, connection_verify
from secrets_vault.crypto import SecretStr
from secrets_vault.tasks import leases_issue
from tests.harness.cross_owner import assert_cross_owner_404
from tests.harness.mailservers import MALFORMED, sample_messages
from tests.harness.object_store import objects_dir

__all__ = ["objects_dir"]

pytestmark = pytest.mark.django_db(databases=["default", "vault"])


@pytest.fixture
def connected(auth_client, mail_settings, mailbox, dovecot, smtp_server, objects_dir):
    from mail import services

    user, password = mailbox
    server = {"host": "localhost", "port": dovecot.imaps_port, "security": "tls", "username": user,
              "password": SecretStr(password)}
    smtp = dict(server, port=smtp_server.tls_port)
    owner = auth_client.user
    with owner_scope(owner):
        connection = services.connection_create_imap(owner=owner, email=user, imap=server, smtp=smtp)
    leases = leases_issue(str(owner.pk), str(connection.pk), {"imap_password": str(connection.imap_secret_id),
                                                               "smtp_password": str(connection.smtp_secret_id)})
    connection_verify(leases, owner_id=str(owner.pk), connection_id=str(connection.pk))
    return auth_client, connection, user


def _sync(client, connection):
    owner = client.user
    leases = leases_issue(str(owner.pk), str(connection.pk), {"imap_password": str(connection.imap_secret_id)})
    return connection_sync(leases, owner_id=str(owner.pk), connection_id=str(connection.pk))


def _imap(dovecot, user):
    conn = imaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port,
                             ssl_context=ssl.create_default_context(cafile=str(dovecot_ca(dovecot))))
    conn.login(user, dovecot.password)
    conn.select("INBOX")
    return conn


def dovecot_ca(dovecot):
    import re

    cert = re.search(r"ssl_cert = <(.+)", dovecot.conf.read_text()).group(1)
    return cert.replace("server.pem", "ca.pem")


def _messages(owner):
    with owner_scope(owner):
        return list(Message.objects.for_owner(owner).order_by("uid"))


def test_initial_sync_stores_every_message_encrypted(connected, dovecot, objects_dir):
    client, connection, user = connected
    dovecot.seed(user, sample_messages(2500))
    result = _sync(client, connection)
    assert result["status"] == "synced" and result["messages"] == 2500 + len(MALFORMED)
    rows = _messages(client.user)
    assert len(rows) == 2500 + len(MALFORMED)
    assert len({r.uid for r in rows}) == len(rows)
    seeded_as_seen = len([n for n in range(len(rows)) if n % 3 == 0])  # Dovecot.seed marks every third \Seen
    assert sum(1 for r in rows if not r.unread) == seeded_as_seen
    # Bodies are objects under the owner's prefix, encrypted: the plaintext is not on disk.
    files = list(objects_dir.rglob("*"))
    assert all(f"owner/{client.user.pk}/" in str(f.relative_to(objects_dir)) for f in files if f.is_file())
    assert not any(b"Hello, this is body" in f.read_bytes() for f in files if f.is_file())
    state = client.get(f"/api/v1/connections/{connection.pk}").json()["sync"]
    assert state["state"] == "idle" and state["done"] == state["total"] == len(rows)


def test_the_messages_api_lists_filters_and_opens_messages(connected, dovecot):
    client, connection, user = connected
    dovecot.seed(user, sample_messages(30))
    _sync(client, connection)
    page = client.get("/api/v1/messages?limit=10").json()
    assert len(page["results"]) == 10 and page["next"]
    first = page["results"][0]
    assert set(first) >= {"id", "connection", "folder", "message_id", "subject", "from", "to", "date", "unread",
                          "labels", "snippet"}
    found = client.get("/api/v1/messages?q=Message number 17").json()["results"]
    assert [m["subject"] for m in found] == ["Message number 17"]
    assert len(client.get("/api/v1/messages?unread=false").json()["results"]) >= 10
    detail = client.get(f"/api/v1/messages/{found[0]['id']}").json()
    assert "Hello, this is body 17." in detail["body_text"]
    assert detail["headers"]["Subject"] == "Message number 17"
    assert client.get("/api/v1/messages?unread=perhaps").status_code == 400


def test_malformed_messages_are_listed_and_shown(connected, dovecot):
    client, connection, user = connected
    dovecot.seed(user, MALFORMED)
    _sync(client, connection)
    listed = client.get("/api/v1/messages?limit=50").json()["results"]
    assert len(listed) == len(MALFORMED)
    for message in listed:
        detail = client.get(f"/api/v1/messages/{message['id']}")
        assert detail.status_code == 200
    html_only = next(m for m in listed if m["subject"] == "html only")
    body = client.get(f"/api/v1/messages/{html_only['id']}").json()["body_html"]
    assert "<script" not in body and "onclick" not in body and "hi" in body


def test_incremental_sync_sees_new_mail_flag_changes_and_expunges(connected, dovecot):
    client, connection, user = connected
    dovecot.seed(user, sample_messages(20, malformed=False), seen_every=0)
    _sync(client, connection)
    imap = _imap(dovecot, user)
    imap.append("INBOX", None, None, sample_messages(1, malformed=False)[0].replace(b"number 0", b"number NEW"))
    imap.uid("STORE", "1:3", "+FLAGS", r"(\Seen)")
    imap.uid("STORE", "4:5", "+FLAGS", r"(\Deleted)")
    imap.expunge()
    imap.logout()
    _sync(client, connection)
    rows = _messages(client.user)
    assert len(rows) == 20 - 2 + 1
    assert any(r.subject == "Message number NEW" for r in rows)
    by_uid = {r.uid: r for r in rows}
    assert all(not by_uid[u].unread for u in (1, 2, 3)) and 4 not in by_uid and 5 not in by_uid
    assert by_uid[6].unread


def test_a_no_change_sync_does_no_work(connected, dovecot, monkeypatch):
    client, connection, user = connected
    dovecot.seed(user, sample_messages(10, malformed=False))
    _sync(client, connection)
    calls = []
    monkeypatch.setattr(sync_imap, "_store_batch", lambda *a, **k: calls.append(a) or 0)
    _sync(client, connection)
    assert calls == []


def test_an_interrupted_sync_resumes_without_loss_or_duplicates(connected, dovecot, monkeypatch, settings):
    # One process storing batch after batch; a sync cut into parts is interrupted in test_sync_parts.py.
    settings.AIEMAILY_SYNC_PARTS = 1
    client, connection, user = connected
    dovecot.seed(user, sample_messages(1100, malformed=False))
    monkeypatch.setattr(sync_imap, "BATCH", 300)
    real = sync_imap._store_batch
    state = {"batches": 0}

    def crash_on_third(*args, **kwargs):
        state["batches"] += 1
        if state["batches"] == 3:
            raise KeyboardInterrupt("worker killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(sync_imap, "_store_batch", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        _sync(client, connection)
    assert len(_messages(client.user)) == 600
    monkeypatch.setattr(sync_imap, "_store_batch", real)
    _sync(client, connection)
    rows = _messages(client.user)
    assert len(rows) == 1100 and len({r.uid for r in rows}) == 1100


def test_a_uidvalidity_change_refetches_the_folder(connected, dovecot):
    client, connection, user = connected
    dovecot.seed(user, sample_messages(15, malformed=False))
    _sync(client, connection)
    owner = client.user
    with owner_scope(owner):
        Folder.objects.for_owner(owner).filter(name="INBOX").update(uidvalidity=1)  # as if the server renumbered
    _sync(client, connection)
    rows = _messages(owner)
    assert len(rows) == 15 and len({r.uid for r in rows}) == 15


@pytest.mark.claim("per-object-keys")
def test_each_object_has_its_own_key_and_a_tampered_or_moved_object_fails(connected, dovecot, objects_dir):
    client, connection, user = connected
    dovecot.seed(user, sample_messages(2, malformed=False))
    _sync(client, connection)
    first, second = _messages(client.user)
    raw_first = (objects_dir / first.blob_key).read_bytes()
    raw_second = (objects_dir / second.blob_key).read_bytes()
    assert raw_first[2:70] != raw_second[2:70]  # different wrapped object keys
    tampered = bytearray(raw_first)
    tampered[-3] ^= 1
    (objects_dir / first.blob_key).write_bytes(bytes(tampered))
    response = client.get(f"/api/v1/messages/{first.pk}")
    assert response.status_code == 500 and "could not be opened" in response.json()["error"]["message"]
    (objects_dir / second.blob_key).write_bytes(raw_first)  # moved to another path of the same owner
    with pytest.raises(blobstore.BlobError):
        blobstore.get(client.user.pk, second.blob_key)


@pytest.mark.claim("per-object-keys")
def test_an_object_copied_into_another_owners_path_does_not_open(connected, dovecot, objects_dir, stranger):
    client, connection, user = connected
    dovecot.seed(user, sample_messages(1, malformed=False))
    _sync(client, connection)
    message = _messages(client.user)[0]
    with owner_scope(stranger):
        own_key = blobstore.put(stranger.pk, ("messages", "x", "y"), b"stranger's own")
    (objects_dir / own_key).write_bytes((objects_dir / message.blob_key).read_bytes())
    with owner_scope(stranger), pytest.raises(blobstore.BlobError):
        blobstore.get(stranger.pk, own_key)
    with pytest.raises(blobstore.BlobError, match="not belong"):
        blobstore.get(stranger.pk, message.blob_key)


@pytest.mark.claim("owner-scoping")
def test_another_users_messages_are_404(connected, dovecot, stranger):
    client, connection, user = connected
    dovecot.seed(user, sample_messages(3, malformed=False))
    _sync(client, connection)
    from rest_framework.test import APIClient

    from tests.conftest import issue_tokens

    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(other, stranger)["access"])
    message = _messages(client.user)[0]

    def snapshot():
        with owner_scope(client.user):
            return list(Message.objects.for_owner(client.user).values("id", "flags", "subject_ct"))

    assert_cross_owner_404(other, "/api/v1/messages/{id}", message.pk, snapshot=snapshot)
    assert_cross_owner_404(other, "/api/v1/connections/{id}/sync", connection.pk, snapshot=snapshot)
    assert other.get("/api/v1/messages").json()["results"] == []
    assert other.get(f"/api/v1/messages?connection={connection.pk}").json()["results"] == []


def test_sync_endpoint_queues_for_active_imap_only(connected, django_capture_on_commit_callbacks, monkeypatch):
    client, connection, user = connected
    sent = []
    monkeypatch.setattr("celery.canvas._chain.apply_async", lambda self, *a, **k: sent.append(self))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/api/v1/connections/{connection.pk}/sync")
    assert response.status_code == 202
    assert [t.name for t in sent[0].tasks] == ["secrets_vault.tasks.leases_issue", "mail.tasks.connection_sync"]
    with owner_scope(client.user):
        Connection.objects.for_owner(client.user).filter(pk=connection.pk).update(status="error")
    assert client.post(f"/api/v1/connections/{connection.pk}/sync").status_code == 400


def test_a_connection_lost_while_the_next_batch_is_fetched_keeps_what_was_stored(connected, dovecot, monkeypatch):
    """The next batch is fetched on a thread while this one is stored: a fetch that fails there
    fails the sync with the batches before it committed (and the cursor with them), and the
    next sync fetches only the rest."""
    import imapclient

    client, connection, user = connected
    dovecot.seed(user, sample_messages(700, malformed=False))
    monkeypatch.setattr(sync_imap, "BATCH", 200)
    real_fetch = imapclient.IMAPClient.fetch
    fetched_batches = []

    def drop_on_third_batch(self, messages, data, *args, **kwargs):
        if data == sync_imap.FETCH_ITEMS:
            fetched_batches.append(list(messages))
            if len(fetched_batches) == 3:
                raise imapclient.exceptions.IMAPClientAbortError("connection lost")
        return real_fetch(self, messages, data, *args, **kwargs)

    monkeypatch.setattr(imapclient.IMAPClient, "fetch", drop_on_third_batch)
    assert _sync(client, connection)["status"] == "error"
    stored = _messages(client.user)
    assert len(stored) == 400 and [m.uid for m in stored] == sorted(fetched_batches[0] + fetched_batches[1])
    with owner_scope(client.user):
        assert Folder.objects.for_owner(client.user).get(name="INBOX").last_uid == max(fetched_batches[1])

    fetched_batches.clear()
    monkeypatch.setattr(imapclient.IMAPClient, "fetch", real_fetch)
    _sync(client, connection)
    rows = _messages(client.user)
    assert len(rows) == 700 and len({r.uid for r in rows}) == 700


def test_batches_are_bounded_by_bytes_as_well_as_by_count(connected, dovecot, monkeypatch):
    """A mailbox of large messages is fetched in batches of at most BATCH_BYTES (one larger
    message on its own), so the batch being stored and the one fetched ahead stay bounded."""
    import imapclient

    client, connection, user = connected
    small = sample_messages(6, malformed=False)
    large = [message + (b"y" * 76 + b"\r\n") * 700 for message in sample_messages(3, malformed=False)]  # ~55 KB each
    dovecot.seed(user, small[:3] + large + small[3:])
    monkeypatch.setattr(sync_imap, "BATCH_BYTES", 40_000)
    real_fetch = imapclient.IMAPClient.fetch
    fetched = []

    def recording(self, messages, data, *args, **kwargs):
        answer = real_fetch(self, messages, data, *args, **kwargs)
        if data == sync_imap.FETCH_ITEMS:
            fetched.append(sum(len(item[b"BODY[]"]) for item in answer.values()))
        return answer

    monkeypatch.setattr(imapclient.IMAPClient, "fetch", recording)
    _sync(client, connection)
    rows = _messages(client.user)
    assert len(rows) == 9 and len({r.uid for r in rows}) == 9
    # The first three small ones together, each large one alone, then the last three small ones.
    assert len(fetched) == 5
    assert fetched[0] < 40_000 and fetched[4] < 40_000 and all(50_000 < size < 60_000 for size in fetched[1:4])
