"""Django admin: staff only, and it shows user metadata, never password hashes."""

import pytest
from django.test import Client

from tests.harness.factories import UserFactory, staff_admin_client

pytestmark = pytest.mark.django_db


def test_admin_requires_staff():
    client = Client()
    client.force_login(UserFactory())
    response = client.get("/admin/accounts/user/")
    assert response.status_code == 302


def test_staff_see_users_but_no_password_hash():
    staff = UserFactory(is_staff=True, is_superuser=True)
    target = UserFactory()
    client = staff_admin_client(staff)
    listing = client.get("/admin/accounts/user/")
    assert listing.status_code == 200 and target.email in listing.content.decode()
    detail = client.get(f"/admin/accounts/user/{target.pk}/change/")
    assert detail.status_code == 200
    html = detail.content.decode()
    assert "pbkdf2" not in html and target.password not in html


@pytest.mark.django_db(transaction=True, databases=["default", "maintenance"])
def test_staff_see_connection_metadata_read_only_and_every_view_is_audited(caplog):
    import logging

    from aiemaily.ownership.binding import owner_scope
    from mail.models import Connection

    owner = UserFactory()
    with owner_scope(owner):
        connection = Connection.objects.create(owner=owner, provider="imap", email="box@example.test",
                                               imap_host="imap.example.test", status="active")
    staff = UserFactory(is_staff=True, is_superuser=True)
    client = staff_admin_client(staff)
    with caplog.at_level(logging.WARNING, logger="aiemaily.audit.unscoped"):
        listing = client.get("/admin/mail/connection/")
        detail = client.get(f"/admin/mail/connection/{connection.pk}/change/")
    assert listing.status_code == 200 and str(connection.pk) in listing.content.decode()
    assert detail.status_code == 200 and "imap.example.test" in detail.content.decode()
    assert any(f"admin: {staff.email}" in r.getMessage() for r in caplog.records)
    # read-only: no add, no save, no delete
    assert client.get("/admin/mail/connection/add/").status_code == 403
    assert client.post(f"/admin/mail/connection/{connection.pk}/delete/", {"post": "yes"}).status_code == 403
    with owner_scope(owner):
        assert Connection.objects.for_owner(owner).filter(pk=connection.pk).exists()
