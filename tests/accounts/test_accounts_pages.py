"""Server-rendered sign-up, login, logout and password change, with CSRF enforced."""

import pytest
from django.test import Client, override_settings

from accounts.models import User
from tests.harness.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def client():
    return Client(enforce_csrf_checks=True)


def _csrf(client, path):
    response = client.get(path)
    assert response.status_code == 200
    return response.cookies["__Host-csrftoken"].value


def test_signup_creates_the_account_and_signs_in(client, unique_email):
    token = _csrf(client, "/accounts/signup/")
    response = client.post(
        "/accounts/signup/",
        {"email": unique_email.upper(), "password1": "a long unusual phrase", "password2": "a long unusual phrase",
         "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302 and response["Location"] == "/dashboard/"
    user = User.objects.get(email=unique_email)
    assert user.check_password("a long unusual phrase")
    assert client.get("/dashboard/").status_code == 200


def test_signup_rejects_a_duplicate_address_in_any_case(client):
    existing = UserFactory()
    token = _csrf(client, "/accounts/signup/")
    response = client.post(
        "/accounts/signup/",
        {"email": existing.email.upper(), "password1": "a long unusual phrase",
         "password2": "a long unusual phrase", "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 400
    assert b"already exists" in response.content
    assert User.objects.filter(email__iexact=existing.email).count() == 1


def test_signup_rejects_weak_and_mismatched_passwords(client, unique_email):
    token = _csrf(client, "/accounts/signup/")
    weak = client.post("/accounts/signup/", {"email": unique_email, "password1": "password",
                                             "password2": "password", "csrfmiddlewaretoken": token})
    assert weak.status_code == 400
    differ = client.post("/accounts/signup/", {"email": unique_email, "password1": "a long unusual phrase",
                                               "password2": "another long phrase", "csrfmiddlewaretoken": token})
    assert differ.status_code == 400
    assert not User.objects.filter(email=unique_email).exists()


def test_signup_without_csrf_token_is_refused(client, unique_email):
    response = client.post("/accounts/signup/", {"email": unique_email, "password1": "a long unusual phrase",
                                                 "password2": "a long unusual phrase"})
    assert response.status_code == 403
    assert not User.objects.filter(email=unique_email).exists()


def test_login_then_logout(client):
    user = UserFactory()
    token = _csrf(client, "/accounts/login/")
    response = client.post("/accounts/login/", {"username": user.email, "password": DEFAULT_PASSWORD,
                                                "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    session_cookie = response.cookies["__Host-sessionid"]
    assert session_cookie["secure"] and session_cookie["httponly"] and session_cookie["samesite"] == "Lax"
    assert client.get("/dashboard/").status_code == 200
    token = client.cookies["__Host-csrftoken"].value
    assert client.post("/accounts/logout/", {"csrfmiddlewaretoken": token}).status_code == 302
    assert client.get("/dashboard/").status_code == 302


def test_dashboard_requires_login(client):
    response = client.get("/dashboard/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_wrong_password_is_refused_without_saying_which_part_was_wrong(client):
    user = UserFactory()
    token = _csrf(client, "/accounts/login/")
    response = client.post("/accounts/login/", {"username": user.email, "password": "nope nope nope",
                                                "csrfmiddlewaretoken": token})
    assert response.status_code == 200
    assert b"correct email address and password" in response.content.replace(b"e-mail", b"email")


@override_settings(LOGIN_THROTTLE_MAX_FAILURES=3)
def test_login_is_throttled_per_account_after_repeated_failures(client):
    user = UserFactory()
    token = _csrf(client, "/accounts/login/")
    for _ in range(3):
        client.post("/accounts/login/", {"username": user.email, "password": "wrong guess here",
                                         "csrfmiddlewaretoken": token})
    response = client.post("/accounts/login/", {"username": user.email, "password": DEFAULT_PASSWORD,
                                                "csrfmiddlewaretoken": token})
    assert response.status_code == 200
    assert b"Too many failed attempts" in response.content
    assert client.get("/dashboard/").status_code == 302


@override_settings(LOGIN_THROTTLE_MAX_FAILURES=3)
def test_a_successful_login_resets_the_failure_count(client):
    user = UserFactory()
    token = _csrf(client, "/accounts/login/")
    for _ in range(2):
        client.post("/accounts/login/", {"username": user.email, "password": "wrong guess here",
                                         "csrfmiddlewaretoken": token})
    ok = client.post("/accounts/login/", {"username": user.email, "password": DEFAULT_PASSWORD,
                                          "csrfmiddlewaretoken": token})
    assert ok.status_code == 302


def test_password_change_requires_the_old_password(client):
    user = UserFactory()
    client.force_login(user)
    token = _csrf(client, "/accounts/password/")
    bad = client.post("/accounts/password/", {"old_password": "not it at all", "new_password1": "fresh long phrase 1",
                                              "new_password2": "fresh long phrase 1", "csrfmiddlewaretoken": token})
    assert bad.status_code == 200
    good = client.post("/accounts/password/", {"old_password": DEFAULT_PASSWORD,
                                               "new_password1": "fresh long phrase 1",
                                               "new_password2": "fresh long phrase 1", "csrfmiddlewaretoken": token})
    assert good.status_code == 302
    user.refresh_from_db()
    assert user.check_password("fresh long phrase 1")


def test_home_page_renders_for_visitors(client):
    response = client.get("/")
    assert response.status_code == 200
    assert b"Aiemaily" in response.content
