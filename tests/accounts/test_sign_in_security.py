"""Sessions, sign-in and staff: what a password change or reset ends, how refresh tokens are kept,
where failed sign-ins block, and the second factor (users may, staff must)."""

import re

import pytest
from django.db import connection
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from accounts.models import RefreshTokenRecord
from aiemaily.ownership.binding import owner_scope
from tests.conftest import issue_tokens
from tests.harness.factories import DEFAULT_PASSWORD, UserFactory, staff_admin_client, totp_code, totp_device

pytestmark = [pytest.mark.django_db, pytest.mark.claim("jwt-auth")]

NEW_PASSWORD = "a brand new passphrase 42"


def _page_login(user, password=DEFAULT_PASSWORD, ip="127.0.0.1", **extra):
    client = Client(REMOTE_ADDR=ip)
    response = client.post("/accounts/login/", {"username": user.email, "password": password, **extra})
    return client, response


def _refresh(token):
    return APIClient().post("/api/v1/auth/token/refresh", {"refresh": token}, format="json")


def _account(access):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client.get("/api/v1/account")


def _everything_ended(user, other_browser, tokens):
    assert other_browser.get("/dashboard/").status_code == 302  # sent to the login page
    assert _refresh(tokens["refresh"]).status_code == 401
    assert _account(tokens["access"]).status_code == 401
    with owner_scope(user):
        live = RefreshTokenRecord.objects.for_owner(user).filter(revoked_at__isnull=True, used_at__isnull=True)
        assert not live.exists()


# --- refresh tokens are kept only as hashes ---------------------------------------------------------

def test_refresh_tokens_are_stored_only_as_hashes(user):
    tokens = issue_tokens(APIClient(), user)
    rotated = _refresh(tokens["refresh"]).json()
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [row[0] for row in cursor.fetchall()]
    assert not any(t.startswith("token_blacklist") for t in tables)  # the plain-text table is gone
    with owner_scope(user):
        rows = list(RefreshTokenRecord.objects.for_owner(user).values_list("token_hash", flat=True))
        assert len(rows) == 2 and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in rows)
        # No column of any table holds either token (a crude full dump of what the app role sees).
        for table in tables:
            with connection.cursor() as cursor:
                cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from pg_tables
                dump = repr(cursor.fetchall())
            for token in (tokens["refresh"], rotated["refresh"]):
                assert token not in dump and token.split(".")[2] not in dump, table


@pytest.mark.django_db(transaction=True)
def test_the_ledger_is_row_level_secured(user, stranger):
    issue_tokens(APIClient(), user)
    with owner_scope(stranger):
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM accounts_refreshtokenrecord")
            assert cursor.fetchone()[0] == 0
    with owner_scope(user):
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM accounts_refreshtokenrecord")
            assert cursor.fetchone()[0] == 1


def test_a_refresh_token_whose_sub_was_swapped_is_refused(user, stranger):
    tokens = issue_tokens(APIClient(), user)
    head, payload, signature = tokens["refresh"].split(".")
    import base64
    import json

    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = str(stranger.pk)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert _refresh(f"{head}.{forged}.{signature}").status_code == 401


# --- password change and reset end everything ------------------------------------------------------

def test_changing_the_password_ends_every_other_session_and_every_token(user):
    browser, response = _page_login(user)
    assert response.status_code == 302
    other_browser, _ = _page_login(user, ip="198.51.100.7")
    tokens = issue_tokens(APIClient(), user)
    assert other_browser.get("/dashboard/").status_code == 200

    changed = browser.post("/accounts/password/", {"old_password": DEFAULT_PASSWORD,
                                                   "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert changed.status_code == 302
    assert browser.get("/dashboard/").status_code == 200  # the page that made the change stays in
    _everything_ended(user, other_browser, tokens)
    assert issue_tokens(APIClient(), user, password=NEW_PASSWORD)["refresh"]


def test_resetting_the_password_ends_every_session_and_every_token(user, mailoutbox):
    other_browser, _ = _page_login(user)
    tokens = issue_tokens(APIClient(), user)
    client = Client()
    assert client.post("/accounts/password/reset/", {"email": user.email}).status_code == 302
    link = re.search(r"https?://[^/\s]+(/accounts/password/reset/\S+/)", mailoutbox[0].body).group(1)
    form_url = client.get(link)["Location"]
    done = client.post(form_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert done.status_code == 302
    _everything_ended(user, other_browser, tokens)
    assert client.get(link).status_code == 200 and b"invalid" in client.get(link).content  # single use


# --- failed sign-ins block the pair (account, address), never the owner elsewhere ------------------

def test_an_attacker_elsewhere_cannot_lock_the_owner_out(user, settings):
    settings.LOGIN_THROTTLE_MAX_FAILURES = 3
    for _ in range(5):
        _page_login(user, password="guess guess guess", ip="203.0.113.66")
    # The attacker's address is blocked for this account, even with the right password...
    _, blocked = _page_login(user, ip="203.0.113.66")
    assert blocked.status_code == 200 and b"Too many failed attempts" in blocked.content
    api = APIClient(REMOTE_ADDR="203.0.113.66").post(
        "/api/v1/auth/token", {"email": user.email, "password": DEFAULT_PASSWORD}, format="json")
    assert api.status_code == 429
    # ...while the owner, from their own address, signs in on the page and the API.
    _, ok = _page_login(user, ip="192.0.2.10")
    assert ok.status_code == 302
    assert APIClient(REMOTE_ADDR="192.0.2.10").post(
        "/api/v1/auth/token", {"email": user.email, "password": DEFAULT_PASSWORD}, format="json").status_code == 200


def test_one_address_guessing_many_accounts_is_blocked(settings):
    settings.LOGIN_THROTTLE_IP_MAX_FAILURES = 4
    users = [UserFactory() for _ in range(5)]
    for victim in users[:4]:
        _page_login(victim, password="guess guess guess", ip="203.0.113.9")
    _, blocked = _page_login(users[4], ip="203.0.113.9")
    assert b"Too many failed attempts" in blocked.content


def test_account_deletion_password_checks_are_throttled_like_sign_in(auth_client, settings):
    settings.LOGIN_THROTTLE_MAX_FAILURES = 3
    for _ in range(3):
        wrong = auth_client.delete("/api/v1/account", {"password": "not my password"}, format="json")
        assert wrong.status_code == 403
    right = auth_client.delete("/api/v1/account", {"password": DEFAULT_PASSWORD}, format="json")
    assert right.status_code == 429 and right.json()["error"]["code"] == "throttled"
    auth_client.user.refresh_from_db()
    assert auth_client.user.is_active


def test_the_deletion_page_password_check_is_throttled_too(user, settings):
    settings.LOGIN_THROTTLE_MAX_FAILURES = 2
    browser, _ = _page_login(user)
    for _ in range(2):
        browser.post("/accounts/delete/", {"password": "not my password"})
    response = browser.post("/accounts/delete/", {"password": DEFAULT_PASSWORD})
    assert response.status_code == 400 and b"Too many failed attempts" in response.content
    user.refresh_from_db()
    assert user.is_active


# --- staff admin: second factor and the same throttle ----------------------------------------------

def test_staff_without_a_second_factor_cannot_use_the_admin():
    staff = UserFactory(is_staff=True, is_superuser=True)
    password_only = Client().post("/admin/login/", {"username": staff.email, "password": DEFAULT_PASSWORD})
    assert password_only.status_code == 200  # the form again, not a redirect into the admin
    session_only = Client()
    session_only.force_login(staff)
    assert session_only.get("/admin/accounts/user/").status_code == 302


def test_staff_sign_in_needs_the_right_code(settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    staff = UserFactory(is_staff=True, is_superuser=True)
    device = totp_device(staff)
    client = Client()
    wrong = client.post("/admin/login/", {"username": staff.email, "password": DEFAULT_PASSWORD,
                                          "otp_device": device.persistent_id, "otp_token": "000000"
                                          if totp_code(device) != "000000" else "111111"})
    assert wrong.status_code == 200
    assert client.get("/admin/accounts/user/").status_code == 302
    staff_client = staff_admin_client(UserFactory(is_staff=True, is_superuser=True))
    assert staff_client.get("/admin/accounts/user/").status_code == 200


def test_admin_login_goes_through_the_sign_in_throttle(settings):
    settings.LOGIN_THROTTLE_MAX_FAILURES = 2
    staff = UserFactory(is_staff=True, is_superuser=True)
    device = totp_device(staff)
    client = Client(REMOTE_ADDR="203.0.113.5")
    for _ in range(2):
        client.post("/admin/login/", {"username": staff.email, "password": "guess guess guess"})
    response = client.post("/admin/login/", {"username": staff.email, "password": DEFAULT_PASSWORD,
                                             "otp_device": device.persistent_id, "otp_token": totp_code(device)})
    assert response.status_code == 200 and b"Too many failed attempts" in response.content
    assert client.get("/admin/accounts/user/").status_code == 302
    # The same staff member from their own address still gets in.
    assert staff_admin_client(staff, Client(REMOTE_ADDR="192.0.2.44")) is not None


def test_an_empty_or_half_filled_login_form_is_a_form_error_not_a_500(user):
    for data in ({}, {"username": user.email}, {"password": DEFAULT_PASSWORD}, {"username": "not an address"}):
        response = Client().post("/accounts/login/", data)
        assert response.status_code == 200, data


# --- users may turn on TOTP -------------------------------------------------------------------------

def test_a_user_enrols_an_authenticator_and_sign_in_then_asks_for_the_code(user, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    browser, _ = _page_login(user)
    assert b"Set up an authenticator app" in browser.get("/accounts/security/").content
    assert browser.post("/accounts/security/totp/start/").status_code == 302
    page = browser.get("/accounts/security/").content.decode()
    assert "data:image/svg+xml" in page
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    assert re.search(r"Secret: <code>([A-Z2-7]+)</code>", page)
    # A wrong code does not turn it on.
    browser.post("/accounts/security/totp/confirm/", {"code": "12345678"})
    assert not TOTPDevice.objects.filter(user=user, confirmed=True).exists()
    browser.post("/accounts/security/totp/confirm/", {"code": totp_code(device)})
    assert TOTPDevice.objects.filter(user=user, confirmed=True).exists()

    _, password_only = _page_login(user)
    assert password_only.status_code == 200 and b"authenticator" in password_only.content
    device.refresh_from_db()
    _, with_code = _page_login(user, otp=totp_code(device, offset=1))  # the next code: no replay
    assert with_code.status_code == 302

    api = APIClient().post("/api/v1/auth/token", {"email": user.email, "password": DEFAULT_PASSWORD}, format="json")
    assert api.status_code == 401 and api.json()["error"]["code"] == "otp_required"


def test_the_api_token_needs_the_code_and_a_wrong_code_counts_as_a_failure(user, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    settings.LOGIN_THROTTLE_MAX_FAILURES = 2
    device = totp_device(user)
    good = APIClient().post("/api/v1/auth/token", {"email": user.email, "password": DEFAULT_PASSWORD,
                                                   "otp": totp_code(device)}, format="json")
    assert good.status_code == 200 and _account(good.json()["access"]).status_code == 200
    for _ in range(2):
        bad = APIClient().post("/api/v1/auth/token", {"email": user.email, "password": DEFAULT_PASSWORD,
                                                      "otp": "00000000"}, format="json")
        assert bad.status_code == 401
    blocked = APIClient().post("/api/v1/auth/token", {"email": user.email, "password": DEFAULT_PASSWORD,
                                                      "otp": totp_code(device, offset=1)}, format="json")
    assert blocked.status_code == 429


def test_turning_the_second_factor_off_needs_the_password(user):
    totp_device(user)
    browser = Client()
    browser.force_login(user)
    browser.post("/accounts/security/totp/disable/", {"password": "not my password"})
    assert TOTPDevice.objects.filter(user=user).exists()
    browser.post("/accounts/security/totp/disable/", {"password": DEFAULT_PASSWORD})
    assert not TOTPDevice.objects.filter(user=user).exists()
