"""Settings → "Active sessions and API tokens": the owner sees where the account is signed in and ends
any of it. Ending a browser session signs that browser out on its next request (its Django session
is flushed); revoking an API refresh token makes it unusable, without signing out the owner's other
API clients; "sign out everywhere else" keeps only this browser. Every action is POST with CSRF,
idempotent, and another user's session or token is 404 and unchanged."""

import datetime
import hashlib
import uuid

import pytest
from django.contrib.sessions.models import Session
from django.test import Client
from rest_framework.test import APIClient

from accounts.browser_sessions import SESSION_ROW_KEY, ip_prefix, user_agent_summary
from accounts.models import BrowserSession, RefreshTokenRecord
from aiemaily.ownership.binding import owner_scope
from tests.conftest import issue_tokens
from tests.harness.factories import DEFAULT_PASSWORD, UserFactory

# Also on the embedded SQLite default (`make run`): the ledger must work there too.
pytestmark = [pytest.mark.django_db, pytest.mark.sqlite_smoke]

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
SAFARI_PHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                "Version/18.1 Mobile/15E148 Safari/604.1")


def _signed_in(user, *, agent=FIREFOX, address="203.0.113.77") -> Client:
    """A browser that signed in through the login page, CSRF enforced."""
    client = Client(enforce_csrf_checks=True, HTTP_USER_AGENT=agent, REMOTE_ADDR=address)
    client.get("/accounts/login/")
    response = client.post("/accounts/login/", {"username": user.email, "password": DEFAULT_PASSWORD,
                                                "csrfmiddlewaretoken": client.cookies["__Host-csrftoken"].value})
    assert response.status_code == 302, response.content
    return client


def _post(client, path):
    return client.post(path, {"csrfmiddlewaretoken": client.cookies["__Host-csrftoken"].value})


def _row_id(client) -> str:
    return client.session[SESSION_ROW_KEY]


def _rows(user):
    with owner_scope(user):
        return {str(r.pk): r for r in BrowserSession.objects.for_owner(user)}


def _tokens(user):
    with owner_scope(user):
        return {str(r.pk): r for r in RefreshTokenRecord.objects.for_owner(user)}


def test_sign_in_records_the_browser_by_name_and_network_only():
    user = UserFactory()
    client = _signed_in(user, agent=FIREFOX, address="203.0.113.77")
    row = _rows(user)[_row_id(client)]
    assert (row.user_agent, row.ip_prefix, row.ended_at) == ("Firefox on Linux", "203.0.113.0/24", None)
    page = client.get("/accounts/sessions/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-session-id="{row.pk}" data-current="true"' in html and "This browser" in html
    assert "203.0.113.77" not in html and "Gecko" not in html


def test_the_settings_hub_links_the_page():
    user = UserFactory()
    client = _signed_in(user)
    assert 'href="/accounts/sessions/"' in client.get("/settings/").content.decode()


def test_summaries_keep_no_fingerprint():
    assert user_agent_summary(SAFARI_PHONE) == "Safari on iPhone"
    assert user_agent_summary("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                              "HeadlessChrome/131.0.0.0 Safari/537.36") == "Chrome on Linux"
    assert user_agent_summary("") == "Unknown browser"
    assert user_agent_summary("<script>alert(1)</script>" * 100) == "Unknown browser"
    assert ip_prefix("2001:db8:1234:5678::1") == "2001:db8:1234::/48"
    assert ip_prefix("not an address") == ""


def test_ending_another_session_signs_that_browser_out_on_its_next_request():
    user = UserFactory()
    mine, other = _signed_in(user), _signed_in(user, agent=SAFARI_PHONE, address="198.51.100.9")
    other_row, other_key = _row_id(other), other.session.session_key
    assert other.get("/dashboard/").status_code == 200
    listed = mine.get("/accounts/sessions/").content.decode()
    assert f'data-session-id="{other_row}"' in listed and "Safari on iPhone" in listed

    response = _post(mine, f"/accounts/sessions/{other_row}/end/")
    assert response.status_code == 302 and response["Location"] == "/accounts/sessions/"
    assert _rows(user)[other_row].ended_at is not None
    after = other.get("/dashboard/")
    assert after.status_code == 302 and after["Location"].startswith("/accounts/login/")
    assert not Session.objects.filter(session_key=other_key).exists()  # the session itself is gone
    assert other.get("/mail/").status_code == 302
    # This browser is untouched, and the ended one is no longer listed.
    assert mine.get("/dashboard/").status_code == 200
    assert f'data-session-id="{other_row}"' not in mine.get("/accounts/sessions/").content.decode()
    # Idempotent: ending it again changes nothing and is not an error.
    again = _post(mine, f"/accounts/sessions/{other_row}/end/")
    assert again.status_code == 302 and mine.get("/dashboard/").status_code == 200


def test_signing_in_again_after_being_signed_out_works():
    user = UserFactory()
    mine, other = _signed_in(user), _signed_in(user)
    _post(mine, f"/accounts/sessions/{_row_id(other)}/end/")
    assert other.get("/dashboard/").status_code == 302
    again = _signed_in(user)
    assert again.get("/dashboard/").status_code == 200


def test_ending_this_session_signs_this_browser_out():
    user = UserFactory()
    mine = _signed_in(user)
    response = _post(mine, f"/accounts/sessions/{_row_id(mine)}/end/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert mine.get("/dashboard/").status_code == 302


def test_logging_out_ends_the_row():
    user = UserFactory()
    mine = _signed_in(user)
    row = _row_id(mine)
    assert _post(mine, "/accounts/logout/").status_code == 302
    assert _rows(user)[row].ended_at is not None


def test_a_session_from_before_the_ledger_gets_a_row_and_can_be_ended():
    user = UserFactory()
    old = Client(enforce_csrf_checks=True)
    old.force_login(user)
    session = old.session
    session.pop(SESSION_ROW_KEY)
    session.save()
    assert old.get("/dashboard/").status_code == 200
    assert SESSION_ROW_KEY in old.session
    mine = _signed_in(user)
    _post(mine, f"/accounts/sessions/{_row_id(old)}/end/")
    assert old.get("/dashboard/").status_code == 302


def test_another_users_session_and_token_are_404_and_unchanged():
    owner, stranger = UserFactory(), UserFactory()
    owner_browser, stranger_browser = _signed_in(owner), _signed_in(stranger)
    issue_tokens(APIClient(), owner, DEFAULT_PASSWORD)
    session_id = _row_id(owner_browser)
    token_id = next(iter(_tokens(owner)))
    assert _post(stranger_browser, f"/accounts/sessions/{session_id}/end/").status_code == 404
    assert _post(stranger_browser, f"/accounts/sessions/tokens/{token_id}/revoke/").status_code == 404
    assert _post(stranger_browser, f"/accounts/sessions/{uuid.uuid4()}/end/").status_code == 404
    assert _post(stranger_browser, f"/accounts/sessions/tokens/{uuid.uuid4()}/revoke/").status_code == 404
    assert _rows(owner)[session_id].ended_at is None
    assert _tokens(owner)[token_id].revoked_at is None
    assert owner_browser.get("/dashboard/").status_code == 200
    stranger_page = stranger_browser.get("/accounts/sessions/").content.decode()
    assert session_id not in stranger_page and token_id not in stranger_page


def test_actions_need_post_csrf_and_a_signed_in_user():
    user = UserFactory()
    mine, other = _signed_in(user), _signed_in(user)
    path = f"/accounts/sessions/{_row_id(other)}/end/"
    assert mine.get(path).status_code == 405
    assert mine.post(path).status_code == 403  # no CSRF token
    assert mine.post("/accounts/sessions/others/end/").status_code == 403
    anonymous = Client()
    assert anonymous.post(path).status_code == 302
    assert anonymous.get("/accounts/sessions/").status_code == 302
    assert _rows(user)[_row_id(other)].ended_at is None
    assert other.get("/dashboard/").status_code == 200


def test_a_revoked_refresh_token_is_unusable_and_the_other_clients_stay_signed_in():
    user = UserFactory()
    mine = _signed_in(user)
    api = APIClient()
    laptop, script = issue_tokens(api, user, DEFAULT_PASSWORD), issue_tokens(api, user, DEFAULT_PASSWORD)
    listed = mine.get("/accounts/sessions/").content.decode()
    assert all(f'data-token-id="{t}"' in listed for t in _tokens(user))
    laptop_id = next(pk for pk, r in _tokens(user).items()
                     if r.token_hash == hashlib.sha256(laptop["refresh"].encode()).hexdigest())

    assert _post(mine, f"/accounts/sessions/tokens/{laptop_id}/revoke/").status_code == 302
    refused = api.post("/api/v1/auth/token/refresh", {"refresh": laptop["refresh"]}, format="json")
    assert refused.status_code == 401
    # Not treated as reuse: the script's token still renews.
    assert api.post("/api/v1/auth/token/refresh", {"refresh": script["refresh"]}, format="json").status_code == 200
    assert _post(mine, f"/accounts/sessions/tokens/{laptop_id}/revoke/").status_code == 302  # idempotent
    assert f'data-token-id="{laptop_id}"' not in mine.get("/accounts/sessions/").content.decode()


def test_sign_out_everywhere_else_keeps_only_this_browser():
    user = UserFactory()
    mine, phone, laptop = _signed_in(user), _signed_in(user, agent=SAFARI_PHONE), _signed_in(user)
    api = APIClient()
    tokens = issue_tokens(api, user, DEFAULT_PASSWORD)
    response = _post(mine, "/accounts/sessions/others/end/")
    assert response.status_code == 302
    assert "2 other sessions ended, 1 API token revoked" in mine.get("/accounts/sessions/").content.decode()
    assert phone.get("/dashboard/").status_code == 302 and laptop.get("/dashboard/").status_code == 302
    assert mine.get("/dashboard/").status_code == 200
    assert api.post("/api/v1/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json").status_code == 401
    live = [pk for pk, row in _rows(user).items() if row.ended_at is None]
    assert live == [_row_id(mine)]
    assert _post(mine, "/accounts/sessions/others/end/").status_code == 302  # again: nothing left to end


def test_a_password_change_ends_the_other_rows_and_keeps_this_one():
    user = UserFactory()
    mine, other = _signed_in(user), _signed_in(user)
    response = mine.post("/accounts/password/", {
        "old_password": DEFAULT_PASSWORD, "new_password1": "another long unusual phrase",
        "new_password2": "another long unusual phrase", "csrfmiddlewaretoken": mine.cookies["__Host-csrftoken"].value})
    assert response.status_code == 302
    rows = _rows(user)
    assert rows[_row_id(mine)].ended_at is None and rows[_row_id(other)].ended_at is not None
    assert mine.get("/dashboard/").status_code == 200 and other.get("/dashboard/").status_code == 302


def test_the_ledger_table_is_under_row_level_security():
    from django.db import connection, transaction

    if connection.vendor != "postgresql":
        pytest.skip("row-level security is PostgreSQL's")
    owner = UserFactory()
    _signed_in(owner)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM accounts_browsersession")  # no owner bound
        assert cursor.fetchone()[0] == 0
    with owner_scope(owner), connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM accounts_browsersession")
        assert cursor.fetchone()[0] == 1


def test_the_check_costs_one_query_per_request_and_a_write_once_a_minute():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    user = UserFactory()
    mine = _signed_in(user)
    mine.get("/dashboard/")
    with CaptureQueriesContext(connection) as seen:
        assert mine.get("/settings/").status_code == 200
    ledger = [q["sql"] for q in seen.captured_queries if "accounts_browsersession" in q["sql"]]
    assert len(ledger) == 1 and ledger[0].lstrip().upper().startswith("SELECT")
    # A minute later the visit is written down, once.
    with owner_scope(user):
        seen_at = BrowserSession.objects.for_owner(user).get().last_seen_at
        BrowserSession.objects.for_owner(user).update(last_seen_at=seen_at - datetime.timedelta(minutes=2))
    with CaptureQueriesContext(connection) as seen:
        mine.get("/settings/")
    ledger = [q["sql"] for q in seen.captured_queries if "accounts_browsersession" in q["sql"]]
    assert len(ledger) == 2 and ledger[1].lstrip().upper().startswith("UPDATE")


def test_signing_in_again_in_the_same_session_leaves_one_live_row(rf):
    """The login page sends a signed-in browser away, but login() may run again on a signed-in
    session (the staff admin's login, a future flow): the old row must not linger."""
    from django.contrib.auth import login
    from django.contrib.sessions.backends.db import SessionStore

    user = UserFactory()
    request = rf.get("/")
    request.session = SessionStore()
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    first = request.session[SESSION_ROW_KEY]
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    live = [pk for pk, row in _rows(user).items() if row.ended_at is None]
    assert live == [request.session[SESSION_ROW_KEY]] and first not in live


# --- the same through the API: GET /api/v1/sessions, DELETE /api/v1/sessions/{id} -------------------

def _api(user):
    client = APIClient()
    tokens = issue_tokens(client, user, DEFAULT_PASSWORD)
    client.credentials(HTTP_AUTHORIZATION="Bearer " + tokens["access"])
    return client, tokens


def test_the_api_lists_browsers_and_tokens_and_ends_either():
    user = UserFactory()
    browser = _signed_in(user, agent=SAFARI_PHONE, address="198.51.100.9")
    api, tokens = _api(user)
    listed = api.get("/api/v1/sessions").json()["results"]
    kinds = {row["kind"]: row for row in listed}
    assert len(listed) == 2 and set(kinds) == {"browser", "api"}
    assert kinds["browser"]["browser"] == "Safari on iPhone" and kinds["browser"]["network"] == "198.51.100.0/24"
    assert set(kinds["api"]) == {"id", "kind", "created_at", "last_seen_at", "expires_at", "browser", "network"}
    assert kinds["api"]["expires_at"] and tokens["refresh"] not in str(listed)

    assert api.delete(f"/api/v1/sessions/{kinds['browser']['id']}").status_code == 204
    assert browser.get("/dashboard/").status_code == 302  # signed out on its next request
    assert api.delete(f"/api/v1/sessions/{kinds['browser']['id']}").status_code == 204  # again: no change
    assert api.delete(f"/api/v1/sessions/{kinds['api']['id']}").status_code == 204
    assert APIClient().post("/api/v1/auth/token/refresh", {"refresh": tokens["refresh"]},
                            format="json").status_code == 401
    assert api.get("/api/v1/sessions").json()["results"] == []


def test_another_users_sessions_through_the_api_are_404_and_unchanged():
    from tests.harness.cross_owner import assert_cross_owner_404

    owner, stranger = UserFactory(), UserFactory()
    owner_browser = _signed_in(owner)
    issue_tokens(APIClient(), owner, DEFAULT_PASSWORD)
    stranger_api, _ = _api(stranger)
    session_id, token_id = _row_id(owner_browser), next(iter(_tokens(owner)))
    assert_cross_owner_404(stranger_api, "/api/v1/sessions/{id}", session_id,
                           snapshot=lambda: _rows(owner)[session_id].ended_at)
    assert_cross_owner_404(stranger_api, "/api/v1/sessions/{id}", token_id,
                           snapshot=lambda: _tokens(owner)[token_id].revoked_at)
    assert owner_browser.get("/dashboard/").status_code == 200
    assert {row["id"] for row in stranger_api.get("/api/v1/sessions").json()["results"]} == {
        next(iter(_tokens(stranger)))}
    assert APIClient().get("/api/v1/sessions").status_code == 401
