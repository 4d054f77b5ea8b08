"""Microsoft sync against a local Graph (tests/harness/graph_api_server.py): every folder's messages stored
encrypted and listed; delta rounds from the saved deltaLink pick up new mail, deletions, moves,
read and category changes; an expired delta token (410) starts a fresh round without duplicates;
an interrupted sync resumes with nothing lost, duplicated or fetched twice; a refused token marks
the connection needs_reauth; a link to another server is never followed; another owner's
connection cannot be synced into.
"""

import logging
from urllib.parse import unquote

import pytest

from aiemaily.ownership.binding import owner_scope
from mail import blobstore
from mail.models import Connection, Folder, Message
from mail.sync import graph as sync_graph
from mail.tasks import graph_sync
from tests.harness.graph_api_server import FakeGraph
from tests.harness.https_server import session_server
from tests.harness.mailservers import MALFORMED
from tests.harness.rest_sync import use_api, worker_killed_at_put
from tests.mail.test_sync_gmail import lease_for, mail, make_connection, object_files, objects_dir, rows, state

pytestmark = pytest.mark.django_db(databases=["default", "vault"])
__all__ = ["objects_dir"]  # the fixture, shared with the Gmail tests


graph_server = session_server(FakeGraph, "graph_server")


@pytest.fixture
def graph(graph_server, settings, test_ca, objects_dir, monkeypatch):
    return use_api(graph_server, settings, test_ca, monkeypatch, base_setting="GRAPH_API_BASE")


@pytest.fixture
def connection(user):
    return make_connection(user, provider="microsoft")


def sync(owner, connection, token: str) -> dict:
    return graph_sync(lease_for(owner.pk, connection.pk, token), owner_id=str(owner.pk),
                      connection_id=str(connection.pk))


def values(server) -> list[str]:
    return [unquote(r.raw_path.split("/")[-2]) for r in server.requests if r.raw_path.endswith("/$value")]


def folder_links(owner, connection) -> dict:
    return state(owner, connection)["graph"]["folders"]


@pytest.mark.claim("per-object-keys")
def test_full_sync_stores_every_folder_encrypted_and_lists_it(graph, auth_client, connection, objects_dir,
                                                              monkeypatch):
    monkeypatch.setattr(sync_graph, "PAGE_SIZE", 7)  # several delta pages per folder
    monkeypatch.setattr(sync_graph, "BATCH", 4)
    owner = auth_client.user
    projects = graph.add_folder("Projects", parent=graph.folder("inbox"))
    inbox = [graph.add("inbox", mail(n), is_read=n % 2 == 0) for n in range(25)]
    archived = [graph.add("archive", mail(100 + n), categories=["Blue category"]) for n in range(5)]
    nested = [graph.add(projects, mail(200 + n)) for n in range(3)]
    sent = graph.add("sentitems", mail(300), is_read=True)

    result = sync(owner, connection, graph.token)

    total = 25 + 5 + 3 + 1
    assert result == {"connection_id": str(connection.pk), "status": "synced", "messages": total}
    stored = rows(owner)
    assert set(stored) == {*inbox, *archived, *nested, sent}
    assert stored[inbox[0]].folder.name == "Inbox" and stored[inbox[0]].folder.role == "inbox"
    assert not stored[inbox[0]].unread and stored[inbox[1]].unread
    assert stored[archived[0]].labels == ["Blue category"] and stored[archived[0]].folder.role == "archive"
    assert stored[nested[0]].folder.name == "Inbox/Projects"
    assert stored[sent].folder.role == "sent" and stored[inbox[3]].subject == "Gmail message 3"
    assert stored[inbox[3]].thread_id.startswith("conv-")
    files = object_files(objects_dir)
    assert len(files) == total
    assert all(str(f.relative_to(objects_dir)).startswith(f"owner/{owner.pk}/messages/{connection.pk}/")
               for f in files)
    assert not any(b"BODY-TAIL" in f.read_bytes() for f in files)
    listed = auth_client.get("/api/v1/messages?folder=Inbox&limit=100").json()["results"]
    assert len(listed) == 25
    detail = auth_client.get(f"/api/v1/messages/{listed[0]['id']}").json()
    assert "BODY-TAIL" in detail["body_text"]
    # Delta rounds asked for the fields we use, pages we size, and immutable ids; one deltaLink per folder.
    first = [r for r in graph.seen("/messages/delta") if not r.param("$skiptoken")]
    assert first and all(set(r.param("$select").split(",")) >= {"id", "isRead", "categories"} for r in first)
    assert all("odata.maxpagesize=7" in r.headers["prefer"] and "ImmutableId" in r.headers["prefer"]
               for r in graph.seen("/messages/delta"))
    assert len([r for r in graph.seen("/messages/delta") if r.param("$skiptoken")]) == 3  # Inbox: 25 in pages of 7
    links = folder_links(owner, connection)
    assert set(links) == set(graph.folders)
    assert all(link["delta_link"].startswith(graph.base) and "$deltatoken" in link["delta_link"]
               for link in links.values())
    saved = state(owner, connection)
    assert saved["state"] == "idle" and saved["done"] == saved["total"] == total


def test_delta_rounds_pick_up_new_mail_deletions_moves_and_changes(graph, user, connection, objects_dir):
    ids = [graph.add("inbox", mail(n)) for n in range(8)]
    kept = graph.add("archive", mail(50))
    sync(user, connection, graph.token)
    graph.requests.clear()
    new = graph.add("inbox", mail(60))
    graph.delete(ids[0])
    graph.update(ids[1], is_read=True)
    graph.update(ids[2], categories=["Red category", "Travel"])
    graph.move(ids[3], "archive")
    graph.move(kept, "inbox")

    assert sync(user, connection, graph.token)["status"] == "synced"

    stored = rows(user)
    assert set(stored) == set(ids[1:]) | {kept, new}
    assert not stored[ids[1]].unread and stored[ids[2]].labels == ["Red category", "Travel"]
    assert stored[ids[3]].folder.name == "Archive" and stored[kept].folder.name == "Inbox"
    assert values(graph) == [new]  # moved messages keep their body; only the new one is fetched
    assert len(object_files(objects_dir)) == 9 + 1 - 1
    delta = graph.seen("/messages/delta")
    assert delta and all(r.param("$deltatoken") or r.param("$skiptoken") for r in delta)


def test_a_no_change_sync_fetches_no_bodies(graph, user, connection):
    for n in range(4):
        graph.add("inbox", mail(n))
    sync(user, connection, graph.token)
    graph.requests.clear()
    sync(user, connection, graph.token)
    assert values(graph) == [] and len(rows(user)) == 4


def test_expired_delta_tokens_start_a_fresh_round_without_duplicates(graph, user, connection):
    ids = [graph.add("inbox", mail(n)) for n in range(6)]
    sync(user, connection, graph.token)
    new = graph.add("inbox", mail(10))
    graph.delete(ids[0])
    graph.update(ids[1], is_read=True)
    graph.expire_delta_tokens()
    graph.requests.clear()

    assert sync(user, connection, graph.token)["status"] == "synced"

    stored = rows(user)
    assert set(stored) == set(ids[1:]) | {new}  # the deleted one swept by the fresh round
    assert not stored[ids[1]].unread
    assert values(graph) == [new]
    assert any(r.param("$deltatoken") for r in graph.seen("/messages/delta"))  # answered 410, then:
    assert any(r.param("$select") for r in graph.seen("/messages/delta"))
    graph.requests.clear()
    sync(user, connection, graph.token)  # the new deltaLinks work
    assert not any(r.param("$select") for r in graph.seen("/messages/delta"))


def test_an_interrupted_sync_resumes_without_loss_duplicates_or_refetching(graph, user, connection, objects_dir,
                                                                            monkeypatch):
    monkeypatch.setattr(sync_graph, "PAGE_SIZE", 10)
    monkeypatch.setattr(sync_graph, "BATCH", 5)
    ids = [graph.add("inbox", mail(n)) for n in range(40)]
    with worker_killed_at_put(monkeypatch, 18), pytest.raises(KeyboardInterrupt):
        sync(user, connection, graph.token)
    assert len(rows(user)) == 15
    graph.update(ids[0], is_read=True)  # stored before the crash, read while the worker was down
    graph.requests.clear()

    sync(user, connection, graph.token)

    stored = rows(user)
    assert set(stored) == set(ids) and not stored[ids[0]].unread
    assert len(values(graph)) == 25 and len(object_files(objects_dir)) == 40


def test_a_removal_noted_before_a_crash_is_still_applied(graph, user, connection, monkeypatch):
    ids = [graph.add("inbox", mail(n)) for n in range(3)]
    sync(user, connection, graph.token)
    graph.delete(ids[0])
    late = graph.add("archive", mail(9))  # Archive is synced after Inbox

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("worker killed")

    real_put = blobstore.put
    monkeypatch.setattr(blobstore, "put", killed)
    with pytest.raises(KeyboardInterrupt):
        sync(user, connection, graph.token)
    # Inbox's new deltaLink no longer reports the removal; it waits, saved with that link.
    assert state(user, connection)["graph"]["pending_removals"] == {ids[0]: str(rows(user)[ids[1]].folder_id)}
    monkeypatch.setattr(blobstore, "put", real_put)
    sync(user, connection, graph.token)
    assert set(rows(user)) == {ids[1], ids[2], late}
    assert state(user, connection)["graph"]["pending_removals"] == {}


@pytest.mark.claim("no-plaintext-leaks")
def test_a_refused_token_marks_the_connection_needs_reauth(graph, user, connection, caplog):
    graph.add("inbox", mail(1))
    wrong = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.wrong-token.signature"
    with caplog.at_level(logging.DEBUG):
        result = sync(user, connection, wrong)
    assert result["status"] == "error" and result["code"] == "auth_failed"
    with owner_scope(user):
        saved = Connection.objects.for_owner(user).get(pk=connection.pk)
    assert saved.status == Connection.Status.NEEDS_REAUTH and "Microsoft" in saved.last_error
    assert saved.sync_state["state"] == "error"
    assert wrong not in str(saved.sync_state) + saved.last_error + caplog.text + str(result)


def test_a_link_to_another_server_is_never_followed(graph, user, connection, monkeypatch):
    monkeypatch.setattr(sync_graph, "PAGE_SIZE", 2)
    for n in range(5):
        graph.add("inbox", mail(n))
    graph.link_origin = "https://attacker.example"
    result = sync(user, connection, graph.token)
    assert result["status"] == "error"
    saved = state(user, connection)
    assert "another server" in saved["last_error"] and not saved.get("graph", {}).get("folders")
    assert all(r.headers.get("host", "").startswith("127.0.0.1") for r in graph.requests)


def test_throttling_is_retried(graph, user, connection):
    graph.add("inbox", mail(1))
    graph.fail("/messages/delta", 429, times=2, headers={"Retry-After": "0"})
    graph.fail("/$value", 503, times=1)
    assert sync(user, connection, graph.token)["status"] == "synced" and len(rows(user)) == 1


def test_folders_renamed_or_deleted_at_microsoft(graph, user, connection, objects_dir):
    keep = graph.add_folder("Receipts")
    gone = graph.add_folder("Old stuff")
    kept_mail = graph.add(keep, mail(1))
    graph.add(gone, mail(2))
    sync(user, connection, graph.token)
    with owner_scope(user):
        row = Folder.objects.for_owner(user).get(connection=connection, name="Receipts")
    graph.folders[keep]["displayName"] = "Invoices"
    graph.remove_folder(gone)

    sync(user, connection, graph.token)

    with owner_scope(user):
        names = set(Folder.objects.for_owner(user).filter(connection=connection).values_list("name", flat=True))
        assert Folder.objects.for_owner(user).get(pk=row.pk).name == "Invoices"
    assert "Old stuff" not in names and set(rows(user)) == {kept_mail}
    assert len(object_files(objects_dir)) == 1 and gone not in folder_links(user, connection)


def test_malformed_messages_are_stored_and_listed(graph, auth_client, connection):
    for raw in [*MALFORMED, b""]:
        graph.add("inbox", raw)
    sync(auth_client.user, connection, graph.token)
    listed = auth_client.get("/api/v1/messages?limit=50").json()["results"]
    assert len(listed) == len(MALFORMED) + 1
    for message in listed:
        assert auth_client.get(f"/api/v1/messages/{message['id']}").status_code == 200


@pytest.mark.claim("owner-scoping")
def test_another_owners_connection_cannot_be_synced_into(graph, user, stranger):
    theirs = make_connection(stranger, provider="microsoft")
    graph.add("inbox", mail(1))
    result = graph_sync(lease_for(user.pk, theirs.pk, graph.token), owner_id=str(user.pk),
                        connection_id=str(theirs.pk))
    assert result["status"] == "gone" and graph.requests == []
    with owner_scope(stranger):
        assert not Message.objects.for_owner(stranger).exists()
    assert state(stranger, theirs) == {}
