"""Gmail sync against a local Gmail API (tests/harness/gmail_api_server.py) through google-auth's
AuthorizedSession: every message (malformed ones too) stored encrypted and listed; history-based
increments pick up new mail, deletions and label/read changes; a too-old historyId falls back to a
full resync without duplicates; an interrupted sync resumes with nothing lost, duplicated or
fetched twice; a refused token marks the connection needs_reauth; another owner's connection
cannot be synced into.

The pytest process plays every role: the access-token lease is sealed here as worker-vault would
(secrets_vault.sealing.lease_seal), and the task runs as worker-sync would after the chain.
"""

import logging

import pytest

from aiemaily.ownership.binding import owner_scope
from mail.models import Connection, Message
from mail.sync import gmail as sync_gmail
from mail.tasks import gmail_sync
from secrets_vault.sealing import lease_seal
from tests.harness.gmail_api_server import FakeGmail
from tests.harness.https_server import session_server
from tests.harness.mailservers import MALFORMED
from tests.harness.oauth_flow import browser, google, google_server, sent
from tests.harness.object_store import objects_dir
from tests.harness.rest_sync import use_api, worker_killed_at_put

# The local Google's fixtures, for the end-to-end test, and the object store for everyone.
__all__ = ["browser", "google", "google_server", "objects_dir", "sent"]

pytestmark = pytest.mark.django_db(databases=["default", "vault"])


gmail_server = session_server(FakeGmail, "gmail_server")


@pytest.fixture
def gmail(gmail_server, settings, test_ca, objects_dir, monkeypatch):
    return use_api(gmail_server, settings, test_ca, monkeypatch, base_setting="GMAIL_API_BASE")


def make_connection(owner, provider="gmail") -> Connection:
    with owner_scope(owner):
        return Connection.objects.create(owner=owner, provider=provider, email="ada@gmail.test", status="active",
                                         granted_scopes=["https://www.googleapis.com/auth/gmail.readonly"])


@pytest.fixture
def connection(user):
    return make_connection(user)


def lease_for(owner_id, connection_id, token: str) -> dict:
    """What secrets_vault.tasks.oauth_access_lease hands to the sync task."""
    return lease_seal(token.encode(), owner_id=owner_id, connection_id=connection_id,
                      purpose="oauth_access_token").as_message()


def sync(owner, connection, token: str) -> dict:
    return gmail_sync(lease_for(owner.pk, connection.pk, token), owner_id=str(owner.pk),
                      connection_id=str(connection.pk))


def mail(n: int) -> bytes:
    return (f"From: Sender {n} <s{n}@example.test>\r\nTo: ada@gmail.test\r\nSubject: Gmail message {n}\r\n"
            f"Date: Mon, 2 Nov 2026 10:{n % 60:02d}:00 +0000\r\nMessage-ID: <g{n}@example.test>\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\nHello {n}. " + "Lorem ipsum dolor. " * 30
            + f"BODY-TAIL-{n}\r\n").encode()


def rows(owner) -> dict[str, Message]:
    with owner_scope(owner):
        found = list(Message.objects.for_owner(owner).select_related("folder"))
    by_id = {m.provider_id: m for m in found}
    assert len(by_id) == len(found), "a message was stored twice"
    return by_id


def state(owner, connection) -> dict:
    with owner_scope(owner):
        return Connection.objects.for_owner(owner).get(pk=connection.pk).sync_state


def object_files(objects_dir):
    return [f for f in objects_dir.rglob("*") if f.is_file()]


def raw_fetches(server) -> list[str]:
    return [r.path.rsplit("/", 1)[1] for r in server.seen("/messages/") if r.param("format") == "raw"]


@pytest.mark.claim("per-object-keys")
def test_full_sync_stores_every_message_encrypted_and_lists_it(gmail, auth_client, connection, objects_dir,
                                                                monkeypatch):
    monkeypatch.setattr(sync_gmail, "LIST_PAGE", 40)  # several list pages
    monkeypatch.setattr(sync_gmail, "BATCH", 25)
    owner = auth_client.user
    ids = [gmail.add(mail(n)) for n in range(100)]
    gmail.relabel(ids[0], remove=["UNREAD"])
    gmail.relabel(ids[1], remove=["INBOX"], add=["Label_1"])  # archived, labelled "Work"
    gmail.relabel(ids[2], remove=["INBOX"], add=["TRASH"])
    sent = gmail.add(mail(100), labels=["SENT"])
    for raw in MALFORMED:
        gmail.add(raw)
    total = 101 + len(MALFORMED)

    result = sync(owner, connection, gmail.token)

    assert result == {"connection_id": str(connection.pk), "status": "synced", "messages": total}
    stored = rows(owner)
    assert len(stored) == total
    assert not stored[ids[0]].unread and stored[ids[3]].unread
    assert stored[ids[1]].folder.name == "[Gmail]/All Mail" and "Label_1" in stored[ids[1]].labels
    assert stored[ids[2]].folder.name == "[Gmail]/Trash" and stored[ids[2]].folder.role == "trash"
    assert stored[sent].folder.name == "[Gmail]/Sent Mail" and stored[ids[5]].folder.name == "INBOX"
    assert stored[ids[5]].thread_id == f"t{ids[5]}" and stored[ids[5]].subject == "Gmail message 5"
    # Bodies are objects under the owner's prefix, encrypted; the database holds no body text.
    files = object_files(objects_dir)
    assert len(files) == total
    prefix = f"owner/{owner.pk}/messages/{connection.pk}/"
    assert all(str(f.relative_to(objects_dir)).startswith(prefix) for f in files)
    assert not any(b"BODY-TAIL" in f.read_bytes() or b"Gmail message" in f.read_bytes() for f in files)
    with owner_scope(owner):
        assert "BODY-TAIL" not in str(list(Message.objects.for_owner(owner).values()))
    # Listed and opened through the API.
    inbox = auth_client.get(f"/api/v1/messages?connection={connection.pk}&folder=INBOX&limit=200").json()
    assert len(inbox["results"]) == total - 3
    work = auth_client.get("/api/v1/messages?label=Label_1").json()["results"]
    assert [m["subject"] for m in work] == ["Gmail message 1"]
    detail = auth_client.get(f"/api/v1/messages/{work[0]['id']}").json()
    assert "BODY-TAIL-1" in detail["body_text"] and detail["folder"] == "[Gmail]/All Mail"
    # The cursor is the mailbox historyId, in PostgreSQL; progress is complete.
    saved = state(owner, connection)
    assert saved["gmail"]["history_id"] == str(gmail.history_id)
    assert saved["gmail"]["labels"]["Label_1"] == "Work"
    assert saved["state"] == "idle" and saved["done"] == saved["total"] == total
    assert auth_client.get(f"/api/v1/connections/{connection.pk}").json()["sync"]["state"] == "idle"
    assert {r.method for r in gmail.requests} == {"GET"}
    assert len(gmail.seen("/users/me/messages")) > 3  # paginated
    assert sorted(raw_fetches(gmail)) == sorted(stored)


def test_incremental_sync_picks_up_new_mail_deletions_and_label_changes(gmail, user, connection, objects_dir):
    ids = [gmail.add(mail(n)) for n in range(10)]
    sync(user, connection, gmail.token)
    cursor = state(user, connection)["gmail"]["history_id"]
    gmail.requests.clear()
    new = gmail.add(mail(50))
    gmail.delete(ids[0])
    gmail.delete(ids[1])
    gmail.relabel(ids[2], remove=["UNREAD"])  # read
    gmail.relabel(ids[3], remove=["INBOX"])  # archived
    gmail.relabel(ids[4], add=["STARRED", "Label_2"])
    gmail.relabel(ids[4], remove=["Label_2"])

    assert sync(user, connection, gmail.token)["status"] == "synced"

    stored = rows(user)
    assert set(stored) == set(ids[2:]) | {new}
    assert not stored[ids[2]].unread and stored[ids[2]].folder.name == "INBOX"
    assert stored[ids[3]].folder.name == "[Gmail]/All Mail" and "INBOX" not in stored[ids[3]].labels
    assert stored[ids[4]].labels == ["INBOX", "UNREAD", "STARRED"]
    assert stored[new].subject == "Gmail message 50" and stored[new].unread
    assert len(object_files(objects_dir)) == 9  # the deleted messages' objects are gone too
    # Only history was read, from the saved cursor; only the new message's body was fetched.
    history = gmail.seen("/history")
    assert history and history[0].param("startHistoryId") == cursor
    assert set(history[0].query["historyTypes"]) == {"messageAdded", "messageDeleted", "labelAdded", "labelRemoved"}
    assert raw_fetches(gmail) == [new] and not gmail.seen("/profile")
    assert state(user, connection)["gmail"]["history_id"] == str(gmail.history_id)


def test_a_no_change_sync_reads_only_the_history(gmail, user, connection):
    for n in range(5):
        gmail.add(mail(n))
    sync(user, connection, gmail.token)
    gmail.requests.clear()
    sync(user, connection, gmail.token)
    assert sorted(r.path.rsplit("/", 1)[1] for r in gmail.requests) == ["history", "labels"]


def test_history_pages_are_followed(gmail, user, connection, monkeypatch):
    monkeypatch.setattr(sync_gmail, "HISTORY_PAGE", 3)
    sync(user, connection, gmail.token)  # an empty mailbox
    ids = [gmail.add(mail(n)) for n in range(8)]
    gmail.relabel(ids[0], remove=["UNREAD"])
    sync(user, connection, gmail.token)
    assert set(rows(user)) == set(ids) and not rows(user)[ids[0]].unread
    assert len([r for r in gmail.seen("/history") if r.param("pageToken")]) >= 2


def test_too_old_history_means_a_full_resync_without_duplicates(gmail, user, connection):
    ids = [gmail.add(mail(n)) for n in range(10)]
    sync(user, connection, gmail.token)
    added = [gmail.add(mail(20)), gmail.add(mail(21))]
    gmail.delete(ids[0])
    gmail.relabel(ids[1], remove=["UNREAD", "INBOX"], add=["Label_1"])
    gmail.expire_history()
    gmail.requests.clear()

    assert sync(user, connection, gmail.token)["status"] == "synced"

    assert any(r for r in gmail.seen("/history"))  # answered 404, then:
    assert gmail.seen("/profile") and gmail.seen("/users/me/messages")
    stored = rows(user)
    assert set(stored) == set(ids[1:]) | set(added)
    assert sorted(raw_fetches(gmail)) == sorted(added)  # nothing fetched twice
    # Label changes that no history reaches any more are rebuilt from per-label listings.
    assert not stored[ids[1]].unread and stored[ids[1]].folder.name == "[Gmail]/All Mail"
    assert sorted(stored[ids[1]].labels) == ["Label_1"]
    assert state(user, connection)["gmail"]["history_id"] == str(gmail.history_id)


def test_an_interrupted_sync_resumes_without_loss_duplicates_or_refetching(gmail, user, connection, objects_dir,
                                                                            monkeypatch):
    monkeypatch.setattr(sync_gmail, "LIST_PAGE", 40)
    monkeypatch.setattr(sync_gmail, "BATCH", 20)
    ids = [gmail.add(mail(n)) for n in range(90)]  # listed newest first
    with worker_killed_at_put(monkeypatch, 50), pytest.raises(KeyboardInterrupt):  # the 10th object of the third batch
        sync(user, connection, gmail.token)
    assert len(rows(user)) == 40  # two whole batches; the third was never committed
    gmail.relabel(ids[-1], remove=["UNREAD"])  # stored before the crash, read while the worker was down
    gmail.requests.clear()

    sync(user, connection, gmail.token)

    stored = rows(user)
    assert set(stored) == set(ids)
    assert len(raw_fetches(gmail)) == 50  # bodies stored before the crash were not fetched again
    assert len(object_files(objects_dir)) == 90  # objects written by the lost batch were overwritten
    assert not stored[ids[-1]].unread


def test_an_interrupted_incremental_sync_replays_safely(gmail, user, connection, monkeypatch):
    monkeypatch.setattr(sync_gmail, "BATCH", 4)
    sync(user, connection, gmail.token)
    ids = [gmail.add(mail(n)) for n in range(10)]
    gmail.delete(ids[9])
    real = sync_gmail._store_batch
    calls = []

    def crash_on_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("database went away")
        return real(*args)

    monkeypatch.setattr(sync_gmail, "_store_batch", crash_on_second)
    with pytest.raises(RuntimeError):
        sync(user, connection, gmail.token)
    monkeypatch.setattr(sync_gmail, "_store_batch", real)
    sync(user, connection, gmail.token)
    assert set(rows(user)) == set(ids[:9])
    assert state(user, connection)["gmail"]["history_id"] == str(gmail.history_id)


@pytest.mark.claim("no-plaintext-leaks")
def test_a_refused_token_marks_the_connection_needs_reauth(gmail, user, connection, caplog):
    gmail.add(mail(1))
    wrong = "ya29.wrong-token-" + "x" * 20
    with caplog.at_level(logging.DEBUG):
        result = sync(user, connection, wrong)
    assert result["status"] == "error" and result["code"] == "auth_failed"
    with owner_scope(user):
        saved = Connection.objects.for_owner(user).get(pk=connection.pk)
    assert saved.status == Connection.Status.NEEDS_REAUTH and "sign in again" in saved.last_error
    assert saved.sync_state["state"] == "error" and "sign in again" in saved.sync_state["last_error"]
    assert wrong not in str(saved.sync_state) + saved.last_error + caplog.text + str(result)
    assert gmail.requests and rows(user) == {}


def test_a_token_expiring_mid_sync_continues_with_a_new_lease(gmail, user, connection, monkeypatch,
                                                               django_capture_on_commit_callbacks):
    from tests.harness.factories import stored_secret

    monkeypatch.setattr(sync_gmail, "BATCH", 5)
    ids = [gmail.add(mail(n)) for n in range(20)]
    with owner_scope(user):
        Connection.objects.for_owner(user).filter(pk=connection.pk).update(
            oauth_secret=stored_secret(user, "refresh", purpose="oauth_refresh_token"))
    queued = []
    monkeypatch.setattr("celery.canvas._chain.apply_async", lambda self, *a, **k: queued.append(self))
    gmail.token_budget = 8  # labels, profile, list, one batch of five bodies; then the token expires
    with django_capture_on_commit_callbacks(execute=True):
        result = sync(user, connection, gmail.token)
    assert result["status"] == "continuing"
    with owner_scope(user):
        saved = Connection.objects.for_owner(user).get(pk=connection.pk)
    assert saved.status == "active" and saved.sync_state["state"] == "queued"  # not the user's problem
    assert [t.name for t in queued[0].tasks] == ["secrets_vault.tasks.oauth_access_lease", "mail.tasks.gmail_sync"]
    assert 5 <= len(rows(user)) < 20
    gmail.token_budget = None  # the continuation runs with a fresh token
    assert sync(user, connection, gmail.token)["status"] == "synced" and set(rows(user)) == set(ids)


def test_throttling_and_server_errors_are_retried(gmail, user, connection):
    for n in range(3):
        gmail.add(mail(n))
    gmail.fail("/messages/", 503, times=2)
    gmail.fail("/labels", 429, times=1, headers={"Retry-After": "0"})
    gmail.fail("/profile", 403, times=1, reason="userRateLimitExceeded")  # Gmail also throttles with 403
    gmail.fail("/users/me/messages", 500, times=1)
    assert sync(user, connection, gmail.token)["status"] == "synced"
    assert len(rows(user)) == 3


def test_a_provider_that_keeps_failing_leaves_an_error_and_the_cursor(gmail, user, connection):
    gmail.add(mail(1))
    sync(user, connection, gmail.token)
    cursor = state(user, connection)["gmail"]["history_id"]
    gmail.add(mail(2))
    gmail.fail("/history", 503, times=100)
    result = sync(user, connection, gmail.token)
    assert result["status"] == "error"
    saved = state(user, connection)
    assert saved["state"] == "error" and "not answering" in saved["last_error"]
    assert saved["gmail"]["history_id"] == cursor
    with owner_scope(user):
        assert Connection.objects.for_owner(user).get(pk=connection.pk).status == "active"  # not the user's fault
    gmail.faults.clear()
    assert sync(user, connection, gmail.token)["status"] == "synced" and len(rows(user)) == 2


def test_a_server_whose_certificate_is_not_trusted_gets_no_token(gmail, user, connection, settings):
    settings.AIEMAILY_PROVIDER_CA_BUNDLE = None  # only the system's CAs: the test CA is not among them
    result = sync(user, connection, gmail.token)
    assert result["status"] == "error" and gmail.requests == []
    assert "certificate" in state(user, connection)["last_error"]


def test_malformed_messages_are_stored_and_listed(gmail, auth_client, connection):
    for raw in MALFORMED:
        gmail.add(raw)
    gmail.add(b"", raw_override="!!!not*base64~~~")
    gmail.add(b"", raw_override="")
    sync(auth_client.user, connection, gmail.token)
    listed = auth_client.get("/api/v1/messages?limit=50").json()["results"]
    assert len(listed) == len(MALFORMED) + 2
    for message in listed:
        assert auth_client.get(f"/api/v1/messages/{message['id']}").status_code == 200


@pytest.mark.claim("owner-scoping")
def test_another_owners_connection_cannot_be_synced_into(gmail, user, stranger, connection):
    theirs = make_connection(stranger)
    gmail.add(mail(1))
    # A task naming owner A with B's connection (even with a lease made out that way) finds nothing.
    result = gmail_sync(lease_for(user.pk, theirs.pk, gmail.token), owner_id=str(user.pk),
                        connection_id=str(theirs.pk))
    assert result["status"] == "gone"
    # B's own lease, replayed into a task for owner A, does not open either.
    result = gmail_sync(lease_for(stranger.pk, theirs.pk, gmail.token), owner_id=str(user.pk),
                        connection_id=str(theirs.pk))
    assert result["status"] == "gone"
    # A Gmail task on a connection of another provider does nothing.
    outlook = make_connection(user, provider="microsoft")
    assert sync(user, outlook, gmail.token)["status"] == "gone"
    assert gmail.requests == []
    assert rows(stranger) == {} and rows(user) == {}
    assert state(stranger, theirs) == {}


def test_a_lease_for_another_connection_does_not_open(gmail, user, connection):
    other = make_connection(user)
    result = gmail_sync(lease_for(user.pk, other.pk, gmail.token), owner_id=str(user.pk),
                        connection_id=str(connection.pk))
    assert result["status"] == "error" and gmail.requests == []
    assert state(user, connection)["state"] == "error"


def test_sync_dispatch_chains_the_vault_lease_then_the_provider_sync(user, monkeypatch,
                                                                     django_capture_on_commit_callbacks):
    from mail import services
    from tests.harness.factories import stored_secret

    sent = []
    monkeypatch.setattr("celery.canvas._chain.apply_async", lambda self, *a, **k: sent.append(self))
    for provider, task in (("gmail", "mail.tasks.gmail_sync"), ("microsoft", "mail.tasks.graph_sync")):
        connection = make_connection(user, provider)
        with owner_scope(user):
            Connection.objects.for_owner(user).filter(pk=connection.pk).update(
                oauth_secret=stored_secret(user, "refresh", purpose="oauth_refresh_token"))
            connection.refresh_from_db()
            with django_capture_on_commit_callbacks(execute=True):
                services.connection_sync_dispatch(connection=connection)
        lease, run = sent[-1].tasks
        assert (lease.name, run.name) == ("secrets_vault.tasks.oauth_access_lease", task)
        assert list(lease.args) == [str(user.pk), str(connection.pk), "oauth_access_token"]
        assert run.kwargs == {"owner_id": str(user.pk), "connection_id": str(connection.pk)}
    pending = make_connection(user)
    with owner_scope(user), pytest.raises(ValueError):
        services.connection_sync_dispatch(connection=pending)  # no refresh token: nothing to lease


@pytest.mark.claim("isolated-decryption")
def test_end_to_end_with_access_tokens_leased_by_the_vault(auth_client, browser, user, gmail, google, sent,
                                                            django_capture_on_commit_callbacks):
    """The real chain: the vault refreshes at the local Google and leases the access token; the sync
    uses it at the local Gmail, which accepts exactly the tokens that Google issued and still honours."""
    from secrets_vault.tasks import oauth_access_lease
    from tests.mail.test_oauth_google import ACCOUNT, _connect

    connection_id = _connect(auth_client, browser, google, sent, django_capture_on_commit_callbacks)["id"]
    gmail.accepts = google.access_token_valid
    gmail.add(mail(1))
    lease = oauth_access_lease(str(user.pk), connection_id, "oauth_access_token")
    assert gmail_sync(lease, owner_id=str(user.pk), connection_id=connection_id)["status"] == "synced"
    assert len(rows(user)) == 1
    # Consent withdrawn at Google after a lease was issued: the sync is refused and the user told.
    lease = oauth_access_lease(str(user.pk), connection_id, "oauth_access_token")
    google.revoke_account(ACCOUNT)
    result = gmail_sync(lease, owner_id=str(user.pk), connection_id=connection_id)
    assert result["code"] == "auth_failed"
    assert auth_client.get(f"/api/v1/connections/{connection_id}").json()["status"] == "needs_reauth"
