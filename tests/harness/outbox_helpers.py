"""What the outbox tests share, whether the mail leaves by SMTP (tests/mail/test_outbox.py) or by the
Gmail and Graph APIs (tests/mail/test_send_gmail_graph.py): the request that queues a message, the
row as stored, a worker killed just before it records success, and the stranger's view of an outbox."""

from rest_framework.test import APIClient

from aiemaily.ownership.binding import owner_scope
from mail.models import OutboxMessage
from mail.send import outbox as outbox_module
from tests.conftest import issue_tokens
from tests.harness.cross_owner import assert_cross_owner_404


def post_outbox(client, connection, key=None, **overrides):
    body = {"connection": str(connection.pk), "to": ["friend@example.test"], "cc": [],
            "subject": "Lunch on Friday?", "body_text": "Shall we meet at noon?"}
    body.update(overrides)
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post("/api/v1/outbox", body, format="json", **headers)


def outbox_row(client, outbox_id) -> OutboxMessage:
    with owner_scope(client.user):
        return OutboxMessage.objects.for_owner(client.user).get(pk=outbox_id)


def worker_killed_before_marking_sent(monkeypatch) -> None:
    """From here on, the send task dies (KeyboardInterrupt) at the moment it would record "sent": the
    provider has the message, our row still says sending. `monkeypatch.undo()` revives it."""
    real_set = outbox_module._set

    def killed_before_marking_sent(owner_id, outbox_id, **fields):
        if fields.get("status") == "sent":
            raise KeyboardInterrupt("worker killed before recording success")
        return real_set(owner_id, outbox_id, **fields)

    monkeypatch.setattr(outbox_module, "_set", killed_before_marking_sent)


def assert_stranger_cannot_send_from_or_see(client, connection, outbox_id, stranger) -> None:
    """Another user, with their own token, can neither queue mail from my connection nor see my outbox."""
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(other, stranger)["access"])
    assert post_outbox(other, connection).status_code == 404  # my connection id, their token

    def snapshot():
        with owner_scope(client.user):
            return list(OutboxMessage.objects.for_owner(client.user).values("id", "status"))

    assert_cross_owner_404(other, "/api/v1/outbox/{id}", outbox_id, snapshot=snapshot)
    assert other.get("/api/v1/outbox").json()["results"] == []
