"""Microsoft Graph: the shared thread is Graph's conversationId, not what a sender's headers claim
(the Gmail side and the header-derived ids are in tests/mail/test_thread_ids.py)."""

import pytest

from aiemaily.ownership.binding import owner_scope
from mail.models import Message
from tests.harness.factories import UserFactory
from tests.mail.test_sync_graph import connection, graph, graph_server, objects_dir, sync  # noqa: F401 - fixtures
from tests.mail.test_thread_ids import FORGED, SHARED, _client

pytestmark = pytest.mark.django_db(databases=["default", "vault"])


@pytest.mark.claim("owner-scoping")
def test_a_sender_cannot_write_a_message_into_a_shared_graph_conversation(graph, auth_client, connection):  # noqa: F811
    owner = auth_client.user
    shared_id, forged_id = graph.add("inbox", SHARED), graph.add("inbox", FORGED)
    assert sync(owner, connection, graph.token)["status"] == "synced"
    with owner_scope(owner):
        shared = Message.objects.for_owner(owner).get(provider_id=shared_id)
        forged = Message.objects.for_owner(owner).get(provider_id=forged_id)
    assert shared.thread_id == graph.messages[shared_id].conversation and forged.thread_id != shared.thread_id
    delegate = UserFactory()
    grant = auth_client.post(f"/api/v1/messages/{shared.pk}/delegate", {"email": delegate.email}, format="json")
    assert grant.status_code == 201 and grant.json()["thread_source"] == "provider"
    assert [m["subject"] for m in _client(delegate).get("/api/v1/shared/messages").json()["results"]] == ["Salaries"]
