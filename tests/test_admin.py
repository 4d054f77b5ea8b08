"""Django admin: staff only, and it shows user metadata, never password hashes."""

import pytest
from django.test import Client

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_admin_requires_staff():
    client = Client()
    client.force_login(UserFactory())
    response = client.get("/admin/accounts/user/")
    assert response.status_code == 302


def test_staff_see_users_but_no_password_hash():
    staff = UserFactory(is_staff=True, is_superuser=True)
    target = UserFactory()
    client = Client()
    client.force_login(staff)
    listing = client.get("/admin/accounts/user/")
    assert listing.status_code == 200 and target.email in listing.content.decode()
    detail = client.get(f"/admin/accounts/user/{target.pk}/change/")
    assert detail.status_code == 200
    html = detail.content.decode()
    assert "pbkdf2" not in html and target.password not in html
