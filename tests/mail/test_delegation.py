"""Delegating a thread: the delegate reads exactly that thread, nothing else of the owner, and
nothing at all after revocation — enforced by the manager path and by RLS, each on its own."""

import pytest
from rest_framework.test import APIClient

from aiemaily.ownership.binding import owner_scope
from mail.models import Delegation, Message
from tests.conftest import issue_tokens
from tests.harness.cross_owner import assert_cross_owner_404
from tests.harness.factories import UserFactory
from tests.mail.test_sync_imap import _sync, connected, objects_dir  # noqa: F401 - fixtures

pytestmark = [pytest.mark.django_db(databases=["default", "vault"]), pytest.mark.claim("owner-scoping")]

THREAD = [
    b"From: a@example.test\r\nTo: me@example.test\r\nSubject: Budget\r\nMessage-ID: <budget-1@example.test>\r\n"
    b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\n\r\nThe budget draft.\r\n",
    b"From: b@example.test\r\nTo: me@example.test\r\nSubject: Re: Budget\r\nMessage-ID: <budget-2@example.test>\r\n"
    b"In-Reply-To: <budget-1@example.test>\r\nReferences: <budget-1@example.test>\r\n"
    b"Date: Mon, 2 Nov 2026 11:00:00 +0000\r\n\r\nLooks fine to me.\r\n",
    b"From: doctor@example.test\r\nTo: me@example.test\r\nSubject: Your results\r\n"
    b"Message-ID: <private@example.test>\r\nDate: Mon, 2 Nov 2026 12:00:00 +0000\r\n\r\nPrivate medical news.\r\n",
]


def _client(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(client, user)["access"])
    client.user = user
    return client


@pytest.fixture
def shared(connected, dovecot):  # noqa: F811
    owner_client, connection, imap_user = connected
    dovecot.seed(imap_user, THREAD, seen_every=0)
    _sync(owner_client, connection)
    owner = owner_client.user
    with owner_scope(owner):
        budget = Message.objects.for_owner(owner).get(message_id="<budget-1@example.test>")
    delegate = UserFactory()
    response = owner_client.post(f"/api/v1/messages/{budget.pk}/delegate", {"email": delegate.email.upper()},
                                 format="json")
    assert response.status_code == 201, response.content
    return owner_client, _client(delegate), response.json()


def test_the_delegate_sees_exactly_the_thread(shared):
    owner_client, delegate_client, grant = shared
    # IMAP has no provider thread id: the thread is what the messages' headers claim, marked so.
    assert grant["permission"] == "read" and grant["thread_id"] == "hdr:<budget-1@example.test>"
    assert grant["thread_source"] == "headers"
    listed = delegate_client.get("/api/v1/shared/messages").json()["results"]
    assert sorted(m["subject"] for m in listed) == ["Budget", "Re: Budget"]
    detail = delegate_client.get(f"/api/v1/shared/messages/{listed[0]['id']}").json()
    assert "Looks fine to me." in detail["body_text"] or "The budget draft." in detail["body_text"]
    # Nothing else of the owner's: not the other message, not their mailbox list, audit or keys.
    assert delegate_client.get("/api/v1/messages").json()["results"] == []
    assert delegate_client.get("/api/v1/connections").json()["results"] == []
    assert delegate_client.get("/api/v1/audit").json()["results"] == []
    with owner_scope(owner_client.user):
        private = Message.objects.for_owner(owner_client.user).get(message_id="<private@example.test>")
    assert delegate_client.get(f"/api/v1/shared/messages/{private.pk}").status_code == 404
    assert delegate_client.get(f"/api/v1/messages/{private.pk}").status_code == 404


def test_rls_alone_limits_the_delegate_to_the_thread(shared):
    owner_client, delegate_client, grant = shared
    delegate = delegate_client.user
    with owner_scope(delegate):
        # Deliberately unscoped: only the database stands between the delegate and the owner's rows.
        visible = {m.message_id for m in Message._base_manager.all()}
        assert visible == {"<budget-1@example.test>", "<budget-2@example.test>"}
        # Read-only: writes to the owner's rows change nothing or fail.
        assert Message._base_manager.filter(message_id="<budget-1@example.test>").update(subject_ct=b"x") == 0


def test_the_delegate_cannot_insert_rows_for_the_owner(shared):
    from django.db import ProgrammingError

    owner_client, delegate_client, grant = shared
    with owner_scope(owner_client.user):
        budget = Message.objects.for_owner(owner_client.user).get(message_id="<budget-1@example.test>")
    with pytest.raises(ProgrammingError, match="row-level security"), owner_scope(delegate_client.user):
        Message._base_manager.create(owner_id=owner_client.user.pk, connection_id=budget.connection_id,
                                     folder_id=budget.folder_id, subject="forged")


def test_revoking_ends_access_at_both_layers(shared):
    owner_client, delegate_client, grant = shared
    assert owner_client.delete(f"/api/v1/delegations/{grant['id']}").status_code == 204
    assert delegate_client.get("/api/v1/shared/messages").json()["results"] == []
    with owner_scope(delegate_client.user):
        assert Message._base_manager.count() == 0
    listed = owner_client.get("/api/v1/delegations").json()["results"]
    assert listed[0]["revoked_at"] is not None


def test_a_third_user_sees_nothing(shared):
    owner_client, delegate_client, grant = shared
    bystander = _client(UserFactory())
    assert bystander.get("/api/v1/shared/messages").json()["results"] == []
    shared_id = delegate_client.get("/api/v1/shared/messages").json()["results"][0]["id"]

    def snapshot():
        with owner_scope(owner_client.user):
            return list(Message.objects.for_owner(owner_client.user).values("id", "subject_ct"))

    assert_cross_owner_404(bystander, "/api/v1/shared/messages/{id}", shared_id, snapshot=snapshot)
    assert bystander.get("/api/v1/delegations").json()["results"] == []
    with owner_scope(bystander.user):
        assert Message._base_manager.count() == 0


def test_granting_again_does_not_duplicate_and_can_change_permission(shared):
    owner_client, delegate_client, grant = shared
    with owner_scope(owner_client.user):
        budget = Message.objects.for_owner(owner_client.user).get(message_id="<budget-2@example.test>")
    again = owner_client.post(f"/api/v1/messages/{budget.pk}/delegate",
                              {"email": delegate_client.user.email, "permission": "draft"}, format="json").json()
    assert again["id"] == grant["id"] and again["permission"] == "draft"
    with owner_scope(owner_client.user):
        assert Delegation.objects.for_owner(owner_client.user).count() == 1


@pytest.mark.parametrize("email", ["nobody-here@example.test", "not an address", ""])
def test_delegating_to_someone_unknown_is_400(connected, dovecot, email):  # noqa: F811
    owner_client, connection, imap_user = connected
    dovecot.seed(imap_user, THREAD[:1], seen_every=0)
    _sync(owner_client, connection)
    message_id = owner_client.get("/api/v1/messages").json()["results"][0]["id"]
    response = owner_client.post(f"/api/v1/messages/{message_id}/delegate", {"email": email}, format="json")
    assert response.status_code == 400


def test_only_a_verified_address_can_receive_a_thread(connected, dovecot):  # noqa: F811
    from django.test import Client

    from accounts.verification import verification_token

    owner_client, connection, imap_user = connected
    dovecot.seed(imap_user, THREAD[:1], seen_every=0)
    _sync(owner_client, connection)
    message_id = owner_client.get("/api/v1/messages").json()["results"][0]["id"]
    unverified = UserFactory(email_verified_at=None)
    refused = owner_client.post(f"/api/v1/messages/{message_id}/delegate", {"email": unverified.email}, format="json")
    assert refused.status_code == 400
    with owner_scope(owner_client.user):
        assert not Delegation.objects.for_owner(owner_client.user).exists()
    browser = Client()
    browser.force_login(unverified)
    assert browser.post(f"/accounts/verify/{verification_token(unverified)}/").status_code == 302
    granted = owner_client.post(f"/api/v1/messages/{message_id}/delegate", {"email": unverified.email}, format="json")
    assert granted.status_code == 201, granted.content


def test_delegating_to_oneself_is_400(shared):
    owner_client, _, _ = shared
    message_id = owner_client.get("/api/v1/messages").json()["results"][0]["id"]
    response = owner_client.post(f"/api/v1/messages/{message_id}/delegate", {"email": owner_client.user.email},
                                 format="json")
    assert response.status_code == 400


def test_strangers_cannot_delegate_or_revoke(shared):
    owner_client, delegate_client, grant = shared
    stranger = _client(UserFactory())

    def snapshot():
        with owner_scope(owner_client.user):
            return list(Delegation.objects.for_owner(owner_client.user).values("id", "revoked_at", "permission"))

    assert_cross_owner_404(stranger, "/api/v1/delegations/{id}", grant["id"], snapshot=snapshot)
    # The delegate cannot revoke or re-share the owner's grant either.
    assert_cross_owner_404(delegate_client, "/api/v1/delegations/{id}", grant["id"], snapshot=snapshot)
    message_id = owner_client.get("/api/v1/messages").json()["results"][0]["id"]
    assert_cross_owner_404(delegate_client, "/api/v1/messages/{id}/delegate", message_id, snapshot=snapshot,
                           body={"email": stranger.user.email})
