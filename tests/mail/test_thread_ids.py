"""A shared thread is the provider's thread where the provider has one (Gmail threadId, Graph
conversationId): a sender who writes References/Message-ID headers naming a shared thread does not
get a message into it. Without a provider id (IMAP) the thread comes from the headers and is
marked so (`hdr:` ids, thread_source "headers"), and such ids can never equal a provider's."""

import pytest
from rest_framework.test import APIClient

from aiemaily.ownership.binding import owner_scope
from mail.models import Folder, Message
from mail.parsing import parse, thread_source
from mail.sync import rest as sync_rest
from tests.conftest import issue_tokens
from tests.harness.factories import UserFactory
from tests.mail.test_sync_gmail import connection, gmail, gmail_server, objects_dir, sync  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db(databases=["default", "vault"])

SHARED = (b"From: boss@example.test\r\nTo: ada@gmail.test\r\nSubject: Salaries\r\n"
          b"Message-ID: <salaries@example.test>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n\r\nThe salary table.\r\n")
FORGED = (b"From: attacker@evil.test\r\nTo: ada@gmail.test\r\nSubject: Re: Salaries\r\n"
          b"Message-ID: <forged@evil.test>\r\nIn-Reply-To: <salaries@example.test>\r\n"
          b"References: <salaries@example.test>\r\nDate: Mon, 2 Nov 2026 11:00:00 +0000\r\n\r\n"
          b"Click here to see everyone's salary.\r\n")


def _client(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(client, user)["access"])
    return client


@pytest.mark.claim("owner-scoping")
def test_a_sender_cannot_write_a_message_into_a_shared_gmail_thread(gmail, auth_client, connection):  # noqa: F811
    owner = auth_client.user
    shared_id, forged_id = gmail.add(SHARED), gmail.add(FORGED)
    assert sync(owner, connection, gmail.token)["status"] == "synced"
    with owner_scope(owner):
        shared = Message.objects.for_owner(owner).get(provider_id=shared_id)
        forged = Message.objects.for_owner(owner).get(provider_id=forged_id)
    assert shared.thread_id == gmail.messages[shared_id].thread_id  # Gmail's threadId, not a header
    assert forged.thread_id != shared.thread_id
    delegate = UserFactory()
    grant = auth_client.post(f"/api/v1/messages/{shared.pk}/delegate", {"email": delegate.email}, format="json")
    assert grant.status_code == 201 and grant.json()["thread_source"] == "provider"
    listed = _client(delegate).get("/api/v1/shared/messages").json()["results"]
    assert [m["subject"] for m in listed] == ["Salaries"]
    detail = auth_client.get(f"/api/v1/messages/{forged.pk}").json()
    assert detail["thread_source"] == "provider" and detail["thread_id"] == forged.thread_id


def test_header_thread_ids_are_marked_and_cannot_equal_a_provider_id(user, connection, objects_dir):  # noqa: F811
    with owner_scope(user):
        folder = Folder.objects.create(owner=user, connection=connection, name="INBOX", role="inbox")
    # A provider without a thread id for this message: the headers decide, and say so.
    row = sync_rest.build_row(user.pk, connection, folder,
                              sync_rest.Fetched(provider_id="p1", raw=FORGED, labels=[], unread=True), "x")
    assert row.thread_id == "hdr:<salaries@example.test>" and thread_source(row.thread_id) == "headers"
    with_provider = sync_rest.build_row(user.pk, connection, folder, sync_rest.Fetched(
        provider_id="p2", raw=FORGED, labels=[], unread=True, thread_id="18c0000000000001"), "x")
    assert with_provider.thread_id == "18c0000000000001" and thread_source(with_provider.thread_id) == "provider"
    # A sender who sets Message-ID to a provider thread id gets a marked id, never that id.
    sneaky = b"From: x@evil.test\r\nMessage-ID: 18c0000000000001\r\n\r\nhi\r\n"
    row = sync_rest.build_row(user.pk, connection, folder,
                              sync_rest.Fetched(provider_id="p3", raw=sneaky, labels=[], unread=True), "x")
    assert row.thread_id == "hdr:18c0000000000001" != with_provider.thread_id
    assert parse(sneaky).message_id == "18c0000000000001"


@pytest.mark.django_db(transaction=True, databases=["default", "vault"])
def test_the_migration_marks_imap_thread_ids_of_messages_and_grants_alike(user, objects_dir):  # noqa: F811
    from importlib import import_module

    from django.db import connections
    from django.db.utils import load_backend

    from mail.models import Connection, Delegation
    from tests.conftest import OWNER_ROLE

    delegate = UserFactory()
    with owner_scope(user):
        imap = Connection.objects.create(owner=user, provider="imap", status="active")
        gmail_connection = Connection.objects.create(owner=user, provider="gmail", status="active")
        folders = [Folder.objects.create(owner=user, connection=c, name="INBOX") for c in (imap, gmail_connection)]
        old = Message.objects.create(owner=user, connection=imap, folder=folders[0], uid=1, thread_id="<root@x>")
        provider = Message.objects.create(owner=user, connection=gmail_connection, folder=folders[1],
                                          provider_id="g1", thread_id="18c01")
        Delegation.objects.create(owner=user, delegate=delegate, connection=imap, thread_id="<root@x>")
    settings_dict = connections["default"].settings_dict
    owner_connection = load_backend(settings_dict["ENGINE"]).DatabaseWrapper({**settings_dict, "USER": OWNER_ROLE},
                                                                             "default")
    migration = import_module("mail.migrations.0007_mark_header_thread_ids")
    try:
        with owner_connection.schema_editor() as editor:
            migration.mark(None, editor)
            migration.mark(None, editor)  # run twice: marked ids are not marked again
    finally:
        owner_connection.close()
    with owner_scope(user):
        assert Message.objects.for_owner(user).get(pk=old.pk).thread_id == "hdr:<root@x>"
        assert Message.objects.for_owner(user).get(pk=provider.pk).thread_id == "18c01"
        assert Delegation.objects.for_owner(user).get().thread_id == "hdr:<root@x>"
    # RLS is forced again afterwards.
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT relforcerowsecurity FROM pg_class WHERE relname IN "
                       "('mail_connection', 'mail_message', 'mail_delegation')")
        assert [row[0] for row in cursor.fetchall()] == [True, True, True]
