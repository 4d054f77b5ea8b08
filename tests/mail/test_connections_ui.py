"""The connection pages: add an IMAP mailbox from the browser form, see its status and the scopes
panel, change the password, disconnect; another user's connection is 404 on every page."""

import pytest
from django.test import Client

from aiemaily.ownership.binding import owner_scope
from mail.models import Connection
from mail.tasks import connection_verify
from secrets_vault.models import Secret
from secrets_vault.tasks import leases_issue
from tests.harness.factories import UserFactory

pytestmark = pytest.mark.django_db(databases=["default", "vault"])


def _form(mailbox, dovecot, smtp_server, **overrides):
    user, password = mailbox
    data = {
        "email": user, "imap_host": "localhost", "imap_port": dovecot.imaps_port, "imap_security": "tls",
        "imap_username": user, "imap_password": password, "smtp_host": "localhost",
        "smtp_port": smtp_server.tls_port, "smtp_security": "tls", "smtp_username": user, "smtp_password": password,
    }
    data.update(overrides)
    return data


def _verify(user, connection):
    leases = leases_issue(str(user.pk), str(connection.pk), {"imap_password": str(connection.imap_secret_id),
                                                               "smtp_password": str(connection.smtp_secret_id)})
    connection_verify(leases, owner_id=str(user.pk), connection_id=str(connection.pk))


@pytest.fixture
def signed_in():
    user = UserFactory()
    client = Client()
    client.force_login(user)
    client.user = user
    return client


def test_adding_a_mailbox_from_the_form(signed_in, mail_settings, mailbox, dovecot, smtp_server):
    response = signed_in.post("/connections/add/imap/", _form(mailbox, dovecot, smtp_server))
    assert response.status_code == 302
    user = signed_in.user
    with owner_scope(user):
        connection = Connection.objects.for_owner(user).get()
    assert response["Location"] == f"/connections/{connection.pk}/"
    pending = signed_in.get(response["Location"])
    html = pending.content.decode()
    assert "checking" in html and f"/connections/{connection.pk}/status.json" in html
    assert 'src="/static/js/connections.js"' in html and "nonce=" in html
    assert mailbox[1] not in html
    _verify(user, connection)
    active = signed_in.get(response["Location"]).content.decode()
    # Active: the login check no longer polls, and the first sync is already queued (issue 11),
    # so the page follows that instead.
    assert "status-active" in active and "data-poll-status" not in active
    assert "Waiting for a sync worker" in active and "data-poll-sync" in active
    status = signed_in.get(f"/connections/{connection.pk}/status.json").json()
    assert status["status"] == "active" and status["last_error"] == ""
    assert mailbox[0] in signed_in.get("/connections/").content.decode()


def test_form_errors_are_shown_without_echoing_passwords(signed_in, settings, mailbox, dovecot, smtp_server):
    settings.AIEMAILY_ALLOWED_PRIVATE_HOSTS = []
    response = signed_in.post("/connections/add/imap/",
                              _form(mailbox, dovecot, smtp_server, imap_host="10.1.2.3", smtp_security="none",
                                    smtp_host="93.184.216.34"))
    assert response.status_code == 400
    html = response.content.decode()
    assert "private or reserved" in html and "Unencrypted connections" in html
    assert mailbox[1] not in html
    with owner_scope(signed_in.user):
        assert not Connection.objects.for_owner(signed_in.user).exists()


def test_a_wrong_password_shows_the_error_and_can_be_fixed(signed_in, mail_settings, mailbox, dovecot, smtp_server):
    signed_in.post("/connections/add/imap/", _form(mailbox, dovecot, smtp_server, imap_password="nope-nope"))
    user = signed_in.user
    with owner_scope(user):
        connection = Connection.objects.for_owner(user).get()
    _verify(user, connection)
    page = signed_in.get(f"/connections/{connection.pk}/").content.decode()
    assert "rejected the user name or password" in page and "status-needs_reauth" in page
    response = signed_in.post(f"/connections/{connection.pk}/password/", {"imap_password": mailbox[1]})
    assert response.status_code == 302
    with owner_scope(user):
        connection = Connection.objects.for_owner(user).get()
        assert connection.status == "pending"
        assert Secret.objects.for_owner(user).count() == 2  # the old IMAP secret was deleted
    _verify(user, connection)
    assert "status-active" in signed_in.get(f"/connections/{connection.pk}/").content.decode()


def test_disconnect_from_the_page(signed_in, mail_settings, mailbox, dovecot, smtp_server):
    signed_in.post("/connections/add/imap/", _form(mailbox, dovecot, smtp_server))
    user = signed_in.user
    with owner_scope(user):
        connection = Connection.objects.for_owner(user).get()
    response = signed_in.post(f"/connections/{connection.pk}/disconnect/", {"keep_mail": "yes"})
    assert response.status_code == 302
    with owner_scope(user):
        assert Connection.objects.for_owner(user).get().status == "disconnected"
        assert not Secret.objects.for_owner(user).exists()


@pytest.mark.claim("owner-scoping")
def test_another_users_connection_pages_are_404(signed_in, mail_settings, mailbox, dovecot, smtp_server):
    owner = UserFactory()
    other = Client()
    other.force_login(owner)
    other.post("/connections/add/imap/", _form(mailbox, dovecot, smtp_server))
    with owner_scope(owner):
        connection = Connection.objects.for_owner(owner).get()
        before = list(Connection.objects.for_owner(owner).values())
    base = f"/connections/{connection.pk}/"
    assert signed_in.get(base).status_code == 404
    assert signed_in.get(base + "status.json").status_code == 404
    assert signed_in.post(base + "password/", {"imap_password": "x"}).status_code == 404
    assert signed_in.post(base + "disconnect/", {"keep_mail": "no"}).status_code == 404
    assert mailbox[0] not in signed_in.get("/connections/").content.decode()
    with owner_scope(owner):
        assert list(Connection.objects.for_owner(owner).values()) == before


def test_pages_require_login(db):
    client = Client()
    assert client.get("/connections/").status_code == 302
    assert client.post("/connections/add/gmail/").status_code == 302


def test_sync_progress_is_shown_and_sync_can_be_started(signed_in, mail_settings, mailbox, dovecot, smtp_server,
                                                        django_capture_on_commit_callbacks, monkeypatch):
    signed_in.post("/connections/add/imap/", _form(mailbox, dovecot, smtp_server))
    user = signed_in.user
    with owner_scope(user):
        connection = Connection.objects.for_owner(user).get()
    _verify(user, connection)
    sent = []
    monkeypatch.setattr("celery.canvas._chain.apply_async", lambda self, *a, **k: sent.append(self))
    with django_capture_on_commit_callbacks(execute=True):
        assert signed_in.post(f"/connections/{connection.pk}/sync/").status_code == 302
    assert sent and sent[0].tasks[-1].name == "mail.tasks.connection_sync"
    page = signed_in.get(f"/connections/{connection.pk}/").content.decode()
    assert "Waiting for a sync worker" in page and "data-poll-sync" in page and "connections.js" in page
    with owner_scope(user):
        Connection.objects.for_owner(user).filter(pk=connection.pk).update(
            sync_state={"state": "syncing", "done": 120, "total": 480, "rate": 60.0, "last_error": ""})
    page = signed_in.get(f"/connections/{connection.pk}/").content.decode()
    assert 'value="120" max="480"' in page and "Syncing: 120 of 480 messages (60.0 per second)" in page
    status = signed_in.get(f"/connections/{connection.pk}/status.json").json()
    assert status["sync"] == {"state": "syncing", "done": 120, "total": 480, "rate": 60.0, "last_error": ""}


def test_reauthorising_a_disconnected_or_foreign_provider_connection_is_a_message_not_an_error(signed_in):
    user = signed_in.user
    with owner_scope(user):
        connection = Connection.objects.create(owner=user, provider="gmail", status="disconnected")
    response = signed_in.post("/connections/add/gmail/", {"connection": str(connection.pk)})
    assert response.status_code == 302 and response["Location"] == f"/connections/{connection.pk}/"
    page = signed_in.get(response["Location"]).content.decode()
    assert "disconnected" in page
    assert signed_in.post("/connections/add/microsoft/", {"connection": str(connection.pk)}).status_code == 404
    assert signed_in.post("/connections/add/pop3/").status_code == 404


def test_reauthorising_with_a_garbage_or_foreign_connection_id_is_404(signed_in):
    other = UserFactory()
    with owner_scope(other):
        foreign = Connection.objects.create(owner=other, provider="gmail", status="active")
    assert signed_in.post("/connections/add/gmail/", {"connection": "not-a-uuid"}).status_code == 404
    assert signed_in.post("/connections/add/gmail/", {"connection": str(foreign.pk)}).status_code == 404
    assert signed_in.get("/mail/compose/?reply=garbage").status_code == 404
