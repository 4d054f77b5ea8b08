"""IMAP/SMTP connections against real Dovecot and a real SMTP server: sealed passwords, a login test
by the sync pool through a lease, and clear errors for each way it can fail."""

import pytest

from aiemaily.ownership.binding import owner_scope
from mail.models import Connection
from mail.tasks import connection_verify
from secrets_vault.models import Secret
from secrets_vault.tasks import leases_issue
from tests.harness.cross_owner import assert_cross_owner_404

pytestmark = [pytest.mark.django_db(databases=["default", "vault"])]


def _body(mailbox, dovecot, smtp_server, **overrides):
    user, password = mailbox
    body = {
        "provider": "imap", "email": user,
        "imap": {"host": "localhost", "port": dovecot.imap_port, "security": "starttls", "username": user,
                 "password": password},
        "smtp": {"host": "localhost", "port": smtp_server.starttls_port, "security": "starttls", "username": user,
                 "password": password},
    }
    for path, value in overrides.items():
        section, key = path.split("__")
        body[section][key] = value
    return body


def _run_chain(client, connection_id):
    """What worker-vault and worker-sync do after the commit, run here in order."""
    user = client.user
    with owner_scope(user):
        connection = Connection.objects.for_owner(user).get(pk=connection_id)
    leases = leases_issue(str(user.pk), str(connection.pk),
                          {"imap_password": str(connection.imap_secret_id),
                           "smtp_password": str(connection.smtp_secret_id)})
    connection_verify(leases, owner_id=str(user.pk), connection_id=str(connection.pk))
    return client.get(f"/api/v1/connections/{connection_id}").json()


def _create(client, body):
    response = client.post("/api/v1/connections", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_a_working_mailbox_becomes_active(auth_client, mail_settings, mailbox, dovecot, smtp_server):
    created = _create(auth_client, _body(mailbox, dovecot, smtp_server))
    assert created["status"] == "pending" and created["provider"] == "imap"
    assert mailbox[1] not in str(created)
    with owner_scope(auth_client.user):
        secrets = list(Secret.objects.for_owner(auth_client.user))
    assert {s.purpose for s in secrets} == {"imap_password", "smtp_password"}
    assert all(mailbox[1].encode() not in bytes(s.sealed) for s in secrets)
    final = _run_chain(auth_client, created["id"])
    assert final["status"] == "active", final["last_error"]
    assert final["last_error"] == ""
    assert final["imap"] == {"host": "localhost", "port": dovecot.imap_port, "security": "starttls",
                             "username": mailbox[0]}


def test_implicit_tls_ports_work_too(auth_client, mail_settings, mailbox, dovecot, smtp_server):
    body = _body(mailbox, dovecot, smtp_server, imap__port=dovecot.imaps_port, imap__security="tls",
                 smtp__port=smtp_server.tls_port, smtp__security="tls")
    final = _run_chain(auth_client, _create(auth_client, body)["id"])
    assert final["status"] == "active", final["last_error"]


def test_a_wrong_password_says_so_and_asks_to_reauthorise(auth_client, mail_settings, mailbox, dovecot,
                                                          smtp_server):
    body = _body(mailbox, dovecot, smtp_server, imap__password="Wrong-Canary-Pass-1")
    final = _run_chain(auth_client, _create(auth_client, body)["id"])
    assert final["status"] == "needs_reauth"
    assert "rejected the user name or password" in final["last_error"]
    assert "Wrong-Canary-Pass-1" not in str(final)


def test_tls_to_a_plaintext_port_is_a_tls_error(auth_client, mail_settings, mailbox, dovecot, smtp_server):
    body = _body(mailbox, dovecot, smtp_server, imap__security="tls")  # implicit TLS against the STARTTLS port
    final = _run_chain(auth_client, _create(auth_client, body)["id"])
    assert final["status"] == "error" and "TLS" in final["last_error"]


def test_an_untrusted_certificate_is_a_tls_error(auth_client, settings, mailbox, dovecot, smtp_server):
    settings.AIEMAILY_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1", "localhost"]
    settings.AIEMAILY_MAIL_CA_BUNDLE = None  # the system store does not know the test CA
    final = _run_chain(auth_client, _create(auth_client, _body(mailbox, dovecot, smtp_server))["id"])
    assert final["status"] == "error" and "certificate" in final["last_error"]


def test_an_unreachable_host_says_so(auth_client, mail_settings, mailbox, dovecot, smtp_server):
    from tests.harness.mailservers import free_port

    body = _body(mailbox, dovecot, smtp_server, imap__port=free_port())
    final = _run_chain(auth_client, _create(auth_client, body)["id"])
    assert final["status"] == "error" and "refused the connection" in final["last_error"]


def test_smtp_failures_are_reported_too(auth_client, mail_settings, mailbox, dovecot, smtp_server):
    body = _body(mailbox, dovecot, smtp_server, smtp__password="not-the-smtp-password")
    final = _run_chain(auth_client, _create(auth_client, body)["id"])
    assert final["status"] == "needs_reauth" and "SMTP" in final["last_error"], final["last_error"]


@pytest.mark.parametrize("host", ["10.0.0.5", "169.254.169.254", "192.168.1.1", "[::1]"])
def test_private_addresses_are_refused_at_once(auth_client, settings, mailbox, dovecot, smtp_server, host):
    settings.AIEMAILY_ALLOWED_PRIVATE_HOSTS = []
    response = auth_client.post("/api/v1/connections",
                                _body(mailbox, dovecot, smtp_server, imap__host=host), format="json")
    assert response.status_code == 400
    assert "host" in response.json()["error"]["fields"]["imap"]
    with owner_scope(auth_client.user):
        assert not Connection.objects.for_owner(auth_client.user).exists()


def test_plaintext_is_refused_for_a_public_host(auth_client, settings, mailbox, dovecot, smtp_server):
    settings.AIEMAILY_ALLOWED_PRIVATE_HOSTS = []
    body = _body(mailbox, dovecot, smtp_server, imap__host="93.184.216.34", imap__security="none")
    response = auth_client.post("/api/v1/connections", body, format="json")
    assert response.status_code == 400
    assert "security" in response.json()["error"]["fields"]["imap"]


def test_plaintext_is_allowed_for_an_allow_listed_local_server(auth_client, mail_settings, mailbox, dovecot,
                                                               smtp_server):
    body = _body(mailbox, dovecot, smtp_server, imap__host="127.0.0.1", imap__security="none")
    final = _run_chain(auth_client, _create(auth_client, body)["id"])
    assert final["status"] == "active", final["last_error"]


@pytest.mark.parametrize(
    "mutation",
    [
        {"provider": "pop3"},
        {"imap": None},
        {"email": "not an address"},
        {"imap": {"host": "bad host!", "port": 993, "security": "tls", "username": "u", "password": "p"}},
        {"imap": {"host": "mail.example.com", "port": 70000, "security": "tls", "username": "u", "password": "p"}},
        {"imap": {"host": "mail.example.com", "port": 993, "security": "ssl3", "username": "u", "password": "p"}},
    ],
)
def test_bad_input_is_400_and_never_echoes_the_password(auth_client, mail_settings, mailbox, dovecot, smtp_server,
                                                        mutation):
    body = _body(mailbox, dovecot, smtp_server)
    body.update(mutation)
    if body.get("imap") is None:
        del body["imap"]
    response = auth_client.post("/api/v1/connections", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert mailbox[1] not in response.content.decode()


@pytest.mark.claim("owner-scoping")
def test_another_users_connection_is_404_for_every_method(auth_client, stranger, mail_settings, mailbox, dovecot,
                                                         smtp_server):
    from rest_framework.test import APIClient

    from tests.conftest import issue_tokens

    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(other, stranger)["access"])
    connection_id = _create(other, _body(mailbox, dovecot, smtp_server))["id"]

    def snapshot():
        with owner_scope(stranger):
            return list(Connection.objects.for_owner(stranger).values()), list(
                Secret.objects.for_owner(stranger).values("id", "state"))

    assert_cross_owner_404(auth_client, "/api/v1/connections/{id}", connection_id, snapshot=snapshot)
    assert auth_client.get("/api/v1/connections").json()["results"] == []


def test_disconnect_shreds_credentials_and_keeps_or_deletes_mail(auth_client, mail_settings, mailbox, dovecot,
                                                                 smtp_server):
    kept = _create(auth_client, _body(mailbox, dovecot, smtp_server))["id"]
    gone = _create(auth_client, _body(mailbox, dovecot, smtp_server))["id"]
    assert auth_client.delete(f"/api/v1/connections/{kept}").status_code == 204
    assert auth_client.delete(f"/api/v1/connections/{gone}?keep_mail=false").status_code == 204
    user = auth_client.user
    with owner_scope(user):
        assert Connection.objects.for_owner(user).get(pk=kept).status == "disconnected"
        assert not Connection.objects.for_owner(user).filter(pk=gone).exists()
        assert not Secret.objects.for_owner(user).exists()
    assert auth_client.get(f"/api/v1/connections/{kept}").json()["status"] == "disconnected"
    assert [c["id"] for c in auth_client.get("/api/v1/connections").json()["results"]] == []
    assert auth_client.delete(f"/api/v1/connections/{kept}?keep_mail=maybe").status_code == 400
