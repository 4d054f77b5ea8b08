"""Who may open a stored message body, and the trail it leaves: a delegate's use of the owner's
storage key reaches only the granted thread's objects; every opening for display is audited once
per view (not per part or byte), in the owner's trail, naming a delegate who read it."""

import pytest
from rest_framework.test import APIClient

from aiemaily.ownership.binding import owner_scope
from mail import blobstore
from mail.assistant.models import field_name
from mail.models import Connection, Delegation, Folder, Message
from mail.services import delegation_revoke
from secrets_vault.models import AuditEvent
from tests.conftest import issue_tokens
from tests.harness.factories import UserFactory

SHARED = b"From: a@example.test\r\nSubject: Budget\r\n\r\nThe budget draft.\r\n"
PRIVATE = b"From: doctor@example.test\r\nSubject: Results\r\n\r\nPrivate medical news.\r\n"


@pytest.fixture
def objects_dir(settings, tmp_path):
    blobstore._storage.cache_clear()
    blobstore.key_cache.clear()
    settings.AIEMAILY_STORAGE = "local"
    settings.AIEMAILY_OBJECTS_DIR = tmp_path / "objects"
    yield
    blobstore._storage.cache_clear()
    blobstore.key_cache.clear()


@pytest.fixture
def mailbox(objects_dir):
    """An owner with two threads, one of them delegated to `delegate` (read)."""
    owner, delegate = UserFactory(), UserFactory()
    with owner_scope(owner):
        connection = Connection.objects.create(owner=owner, provider="imap", status="active")
        folder = Folder.objects.create(owner=owner, connection=connection, name="INBOX")
        messages = {}
        for name, body, thread in (("shared", SHARED, "<budget@x>"), ("private", PRIVATE, "<results@x>")):
            key = blobstore.put(owner.pk, ("messages", str(connection.pk), name), body)
            messages[name] = Message.objects.create(owner=owner, connection=connection, folder=folder,
                                                    blob_key=key, thread_id=thread, subject=name)
        # Another object of the owner's that belongs to no message at all (an outbox copy).
        outbox_key = blobstore.put(owner.pk, ("outbox", "o1"), PRIVATE)
        sealed = blobstore.seal_field(owner.pk, field_name("r1", "text"), b"Summary: medical news")
        grant = Delegation.objects.create(owner=owner, delegate=delegate, connection=connection,
                                          thread_id="<budget@x>")
    return owner, delegate, messages, outbox_key, sealed, grant


def _client(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(client, user)["access"])
    return client


def _reads(owner):
    with owner_scope(owner):
        return list(AuditEvent.objects.for_owner(owner).filter(action=AuditEvent.Action.READ).order_by("created_at"))


@pytest.mark.claim("per-object-keys")
@pytest.mark.django_db(databases=["default", "keys"])
def test_a_delegates_storage_key_use_reaches_only_the_granted_threads_objects(mailbox):
    owner, delegate, messages, outbox_key, _, grant = mailbox
    with owner_scope(delegate):  # bound as the delegate, exactly like their API request
        assert blobstore.get(owner.pk, messages["shared"].blob_key, delegate=delegate) == SHARED
        for key in (messages["private"].blob_key, outbox_key):
            with pytest.raises(blobstore.BlobError, match="not shared with you"):
                blobstore.get(owner.pk, key, delegate=delegate)
    # Another user with no grant at all gets nothing, even with the exact object key.
    stranger = UserFactory()
    with owner_scope(stranger), pytest.raises(blobstore.BlobError):
        blobstore.get(owner.pk, messages["shared"].blob_key, delegate=stranger)
    # After revocation, not even the shared thread (the key is warm in this process's cache).
    with owner_scope(owner):
        delegation_revoke(owner=owner, delegation=grant)
    with owner_scope(delegate), pytest.raises(blobstore.BlobError):
        blobstore.get(owner.pk, messages["shared"].blob_key, delegate=delegate)


@pytest.mark.claim("per-object-keys")
@pytest.mark.django_db(databases=["default", "keys"])
def test_rls_alone_stops_a_delegate_key_read_outside_the_thread(mailbox):
    # The manager path is skipped here: only the database's delegate policy decides what is shared.
    owner, delegate, messages, _, _, _ = mailbox
    with owner_scope(delegate):
        visible = set(Message._base_manager.filter(owner_id=owner.pk).values_list("blob_key", flat=True))
    assert visible == {messages["shared"].blob_key}


@pytest.mark.django_db(databases=["default", "keys"])
def test_opening_a_message_is_audited_once_per_view(mailbox):
    owner, delegate, messages, _, _, _ = mailbox
    client = _client(owner)
    assert client.get("/api/v1/messages").status_code == 200
    assert _reads(owner) == []  # a list shows metadata; no body is decrypted

    shared = messages["shared"]
    response = client.get(f"/api/v1/messages/{shared.pk}")
    assert response.status_code == 200 and "The budget draft." in response.json()["body_text"]
    reads = _reads(owner)
    assert len(reads) == 1  # one event for the view, however many parts the body has
    assert (reads[0].subject, reads[0].process, reads[0].purpose) == (str(shared.pk), "web", "message_body")
    assert "budget" not in reads[0].detail.lower()  # the trail names the view, never content

    page = APIClient()
    page.force_login(owner)
    assert page.get(f"/mail/{shared.pk}/").status_code == 200
    assert [r.detail for r in _reads(owner)] == ["opened for display (API message detail)",
                                                 "opened for display (message page)"]
    listed = client.get("/api/v1/audit").json()["results"]
    assert sum(1 for e in listed if e["action"] == "read") == 2  # the user sees them


@pytest.mark.django_db(databases=["default", "keys"])
def test_a_delegates_reading_is_in_the_owners_trail(mailbox):
    owner, delegate, messages, _, _, _ = mailbox
    response = _client(delegate).get(f"/api/v1/shared/messages/{messages['shared'].pk}")
    assert response.status_code == 200 and "The budget draft." in response.json()["body_text"]
    reads = _reads(owner)
    assert len(reads) == 1 and delegate.email in reads[0].detail and reads[0].subject == str(messages["shared"].pk)
    assert _reads(delegate) == []
    assert _client(delegate).get(f"/api/v1/shared/messages/{messages['private'].pk}").status_code == 404
    assert len(_reads(owner)) == 1  # a refused read decrypts nothing and records nothing
