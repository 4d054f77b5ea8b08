"""Connecting Gmail end to end against a local Google (tests/harness/oauth_servers.py), with Google's own
client libraries: least-privilege scopes in the consent URL, PKCE and state, the code sealed by web and
redeemed by the vault, grants compared with what was asked, refresh under a row lock, revocation.

The pytest process plays every role: the API and the callback run as web, the vault tasks are called
as worker-vault would run them after the commit.
"""

import hashlib
import json
import logging
import subprocess
import sys
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from aiemaily.ownership.binding import owner_scope
from mail.models import Connection, OAuthAttempt
from mail.web.oauth import oauth_start
from secrets_vault.models import AuditEvent, Secret
from secrets_vault.oauth import grants as oauth_vault
from secrets_vault.oauth.base import ProviderUnavailable, pkce_challenge
from secrets_vault.sealing import lease_open
from secrets_vault.tasks import oauth_access_lease, oauth_exchange, oauth_revoke
from secrets_vault.vault_services import VaultRefusal
from tests.harness.concurrency import run_together
from tests.harness.factories import UserFactory
from tests.harness.oauth_flow import (
    browser,
    callback,
    google,
    google_server,
    sent,
    start,
    stored_refresh_token,
    url_query,
)
from tests.harness.processes import ROOT, role_env

__all__ = ["browser", "google", "google_server", "sent"]

pytestmark = [pytest.mark.django_db(databases=["default", "vault"])]

GMAIL = "https://www.googleapis.com/auth/gmail."
IDENTITY = ["openid", "https://www.googleapis.com/auth/userinfo.email"]
EVERYTHING = [*IDENTITY, GMAIL + "readonly", GMAIL + "modify", GMAIL + "send"]
CALLBACK = "http://testserver/connections/oauth/gmail/callback"
ACCOUNT = "ada@gmail.test"


def _start(auth_client, **body) -> dict:
    return start(auth_client, "gmail", **body)


def _callback(browser, location: str, capture):
    return callback(browser, location, capture, expected=CALLBACK)


def _exchange(sent) -> dict:
    name, args = sent.pop()
    assert name == "secrets_vault.tasks.oauth_exchange"
    return oauth_exchange(*args)


def _connect(auth_client, browser, google, sent, capture, *, grant=None, account=ACCOUNT, **body) -> dict:
    created = _start(auth_client, **body)
    response = _callback(browser, google.consent(created["authorize_url"], account=account, grant=grant), capture)
    assert response.status_code == 302 and response["Location"] == f"/connections/{created['id']}/"
    _exchange(sent)
    return auth_client.get(f"/api/v1/connections/{created['id']}").json()


def _secrets(user, **filters):
    with owner_scope(user):
        return list(Secret.objects.for_owner(user).filter(**filters))


def _audit(user):
    with owner_scope(user):
        return [(e.action, e.process, e.purpose) for e in AuditEvent.objects.for_owner(user).order_by("created_at")]


def _connection(user, connection_id) -> Connection:
    with owner_scope(user):
        return Connection.objects.for_owner(user).get(pk=connection_id)


def _snapshot(user):
    with owner_scope(user):
        return (list(Connection.objects.for_owner(user).values()), list(OAuthAttempt.objects.for_owner(user).values()),
                list(Secret.objects.for_owner(user).values("id", "purpose", "state")))


# --- the whole flow ------------------------------------------------------------------------------

@pytest.mark.claim("least-privilege-scopes")
@pytest.mark.claim("isolated-decryption")
def test_gmail_connects_end_to_end(auth_client, browser, user, google, sent, django_capture_on_commit_callbacks):
    created = _start(auth_client)
    assert created["status"] == "pending" and created["provider"] == "gmail"
    url = created["authorize_url"]
    assert url.startswith(f"{google.base_url}/o/oauth2/v2/auth?")
    q = url_query(url)
    assert q["scope"].split() == EVERYTHING  # exactly the table's scopes, nothing else
    assert (q["client_id"], q["redirect_uri"], q["response_type"]) == (google.client_id, CALLBACK, "code")
    assert (q["access_type"], q["include_granted_scopes"], q["prompt"]) == ("offline", "true", "consent")
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert len(q["state"]) >= 43 and len(q["nonce"]) == 64
    assert google.client_secret not in url and "client_secret" not in q

    location = google.consent(url, account=ACCOUNT)
    code = url_query(location)["code"]
    response = _callback(browser, location, django_capture_on_commit_callbacks)
    assert response.status_code == 302 and response["Location"] == f"/connections/{created['id']}/"

    # Web kept only the state's hash and a sealed code; it queued the vault, which has not run yet.
    with owner_scope(user):
        attempt = OAuthAttempt.objects.for_owner(user).get(connection_id=created["id"])
    assert attempt.state_hash == hashlib.sha256(q["state"].encode()).hexdigest() and attempt.used_at
    [grant] = _secrets(user)
    assert grant.purpose == "oauth_grant" and grant.state == "pending"
    assert code.encode() not in bytes(grant.sealed) and code not in str(_snapshot(user))
    assert google.requests_to("/token") == []  # web never talks to Google's token endpoint
    assert [name for name, _ in sent] == ["secrets_vault.tasks.oauth_exchange"]

    assert _exchange(sent)["status"] == "active"
    final = auth_client.get(f"/api/v1/connections/{created['id']}").json()
    assert final["status"] == "active" and final["last_error"] == ""
    assert final["email"] == ACCOUNT
    assert final["requested_scopes"] == EVERYTHING and final["granted_scopes"] == EVERYTHING
    assert final["capabilities"] == ["organise", "read", "send"]

    # The refresh token exists only as ciphertext under the user's DEK; the code is gone.
    [stored] = _secrets(user)
    [refresh_token] = google.live_refresh_tokens()
    assert stored.purpose == "oauth_refresh_token" and stored.state == "stored" and stored.sealed is None
    assert refresh_token.encode() not in bytes(stored.ciphertext)
    assert refresh_token not in str(_snapshot(user)) and refresh_token not in str(final)

    # The vault redeemed the code with the PKCE verifier and the client secret (HTTP Basic).
    [token_request] = google.requests_to("/token")
    assert token_request.basic_auth() == (google.client_id, google.client_secret)
    assert token_request.form["grant_type"] == "authorization_code" and token_request.form["code"] == code
    assert pkce_challenge(token_request.form["code_verifier"]) == q["code_challenge"]
    assert token_request.form["redirect_uri"] == CALLBACK
    for request in google.requests:
        if request.path != "/token":
            assert google.client_secret not in request.text()
    assert _audit(user) == [("store", "web", "oauth_grant"), ("decrypt", "vault", "oauth_grant"),
                            ("delete", "vault", "oauth_grant"), ("store", "vault", "oauth_refresh_token")]


@pytest.mark.claim("least-privilege-scopes")
@pytest.mark.parametrize(("capabilities", "expected"), [
    (["read"], [*IDENTITY, GMAIL + "readonly"]),
    (["send"], [*IDENTITY, GMAIL + "send"]),
    (["organise"], [*IDENTITY, GMAIL + "modify"]),
])
def test_each_capability_asks_for_its_own_scope_only(auth_client, google, capabilities, expected):
    created = _start(auth_client, capabilities=capabilities)
    assert url_query(created["authorize_url"])["scope"].split() == expected
    assert created["requested_scopes"] == expected


@pytest.mark.claim("isolated-decryption")
def test_a_lease_carries_a_fresh_access_token_to_the_sync_pool(auth_client, browser, user, google, sent,
                                                              django_capture_on_commit_callbacks):
    final = _connect(auth_client, browser, google, sent, django_capture_on_commit_callbacks)
    [refresh_token] = google.live_refresh_tokens()
    lease = oauth_access_lease(str(user.pk), final["id"], "oauth_access_token")
    assert refresh_token not in json.dumps(lease)
    access = lease_open(lease, owner_id=user.pk, connection_id=final["id"], purpose="oauth_access_token").reveal()
    assert google.access_token_valid(access) and access not in json.dumps(lease)
    [refresh] = [r for r in google.requests_to("/token") if r.form["grant_type"] == "refresh_token"]
    assert refresh.form["client_secret"] == google.client_secret  # google-auth posts it (client_secret_post)
    assert _audit(user)[-2:] == [("decrypt", "vault", "oauth_refresh_token"), ("lease", "vault", "oauth_access_token")]
    with pytest.raises(VaultRefusal):
        oauth_access_lease(str(user.pk), final["id"], "oauth_refresh_token")  # never the refresh token itself


@pytest.mark.claim("no-plaintext-leaks")
def test_no_code_verifier_token_or_client_secret_reaches_the_logs(auth_client, browser, user, google, sent, caplog,
                                                                 django_capture_on_commit_callbacks):
    caplog.set_level(logging.DEBUG)
    google.rotate_refresh_tokens = True
    final = _connect(auth_client, browser, google, sent, django_capture_on_commit_callbacks)
    results = [oauth_access_lease(str(user.pk), final["id"], "oauth_access_token")]
    with django_capture_on_commit_callbacks(execute=True):
        auth_client.delete(f"/api/v1/connections/{final['id']}")
    [(_, args)] = sent
    results.append(oauth_revoke(*args))
    forms = [r.form for r in google.requests_to("/token")]
    secret_values = {google.client_secret, *google.refresh_tokens, *google.access_tokens,
                     *(form.get(k) for form in forms for k in ("code", "code_verifier", "refresh_token"))}
    secret_values.discard(None)
    assert len(secret_values) >= 6
    assert caplog.records  # the libraries did log, at DEBUG
    leaked = [value[:12] for value in secret_values if value in caplog.text or value in json.dumps(results)]
    assert leaked == []


# --- what Google granted -------------------------------------------------------------------------

@pytest.mark.claim("least-privilege-scopes")
def test_a_narrower_grant_works_with_the_reduced_capabilities(auth_client, browser, user, google, sent,
                                                              django_capture_on_commit_callbacks):
    granted = [*IDENTITY, GMAIL + "readonly"]
    final = _connect(auth_client, browser, google, sent, django_capture_on_commit_callbacks, grant=granted)
    assert final["status"] == "active"
    assert final["requested_scopes"] == EVERYTHING and final["granted_scopes"] == granted
    assert final["capabilities"] == ["read"]
    assert len(_secrets(user, purpose="oauth_refresh_token")) == 1


@pytest.mark.claim("least-privilege-scopes")
def test_a_broader_grant_is_refused_and_revoked(auth_client, browser, user, google, sent,
                                                django_capture_on_commit_callbacks):
    drive = "https://www.googleapis.com/auth/drive.readonly"
    final = _connect(auth_client, browser, google, sent, django_capture_on_commit_callbacks,
                     grant=[*EVERYTHING, drive], capabilities=["read", "organise", "send"])
    assert final["status"] == "error"
    assert final["last_error"].startswith("Google granted more access than we asked for; we refused it")
    assert final["granted_scopes"] == [] and final["capabilities"] == []
    assert len(google.requests_to("/revoke")) == 1 and google.live_refresh_tokens() == []
    assert _secrets(user) == []
    assert ("refused", "vault", "oauth_scopes") in _audit(user)


@pytest.mark.claim("least-privilege-scopes")
def test_incremental_authorization_asks_only_for_the_added_scope(auth_client, browser, user, google, sent,
                                                                 django_capture_on_commit_callbacks):
    first = _connect(auth_client, browser, google, sent, django_capture_on_commit_callbacks, capabilities=["read"])
    secret_id = _connection(user, first["id"]).oauth_secret_id
    with owner_scope(user):  # as the web request that starts it would be
        connection, url = oauth_start(owner=user, provider="gmail", capabilities=["read", "send"],
                                      redirect_uri=CALLBACK, connection=_connection(user, first["id"]))
    q = url_query(url)
    assert q["scope"].split() == [GMAIL + "send"]
    assert q["include_granted_scopes"] == "true" and q["login_hint"] == ACCOUNT
    assert _connection(user, first["id"]).requested_scopes == [*IDENTITY, GMAIL + "readonly"]  # until granted
    _callback(browser, google.consent(url, account=ACCOUNT), django_capture_on_commit_callbacks)
    _exchange(sent)
    upgraded = auth_client.get(f"/api/v1/connections/{first['id']}").json()
    assert upgraded["status"] == "active"
    assert upgraded["requested_scopes"] == [*IDENTITY, GMAIL + "readonly", GMAIL + "send"]
    assert sorted(upgraded["granted_scopes"]) == sorted(upgraded["requested_scopes"])
    assert upgraded["capabilities"] == ["read", "send"]
    assert _connection(user, first["id"]).oauth_secret_id == secret_id  # the same secret, new value
    assert len(_secrets(user)) == 1


def test_reauthorising_needs_the_same_account(auth_client, browser, user, google, sent,
                                              django_capture_on_commit_callbacks):
    final = _connect(auth_client, browser, google, sent, django_capture_on_commit_callbacks)
    google.revoke_account(ACCOUNT)
    with pytest.raises(VaultRefusal):
        oauth_access_lease(str(user.pk), final["id"], "oauth_access_token")
    assert _connection(user, final["id"]).status == "needs_reauth"

    def reauthorise(account):
        with owner_scope(user):
            _, url = oauth_start(owner=user, provider="gmail", redirect_uri=CALLBACK,
                                 connection=_connection(user, final["id"]))
        assert url_query(url)["scope"].split() == EVERYTHING and url_query(url)["login_hint"] == ACCOUNT
        _callback(browser, google.consent(url, account=account), django_capture_on_commit_callbacks)
        _exchange(sent)
        return _connection(user, final["id"])

    wrong = reauthorise("eve@gmail.test")
    assert wrong.status == "needs_reauth" and wrong.email == ACCOUNT
    assert wrong.last_error.startswith("You signed in as eve@gmail.test, but this connection is for " + ACCOUNT)
    assert len(google.requests_to("/revoke")) == 1 and _secrets(user) == []  # eve's grant revoked, not kept
    right = reauthorise(ACCOUNT)
    assert right.status == "active" and right.last_error == "" and right.oauth_secret_id is not None


def test_the_address_comes_from_userinfo_when_no_id_token_is_issued(auth_client, browser, google, sent,
                                                                    django_capture_on_commit_callbacks):
    google.issue_id_tokens = False
    final = _connect(auth_client, browser, google, sent, django_capture_on_commit_callbacks)
    assert final["status"] == "active" and final["email"] == ACCOUNT
    [userinfo] = google.requests_to("/v1/userinfo")
    assert userinfo.headers["authorization"].startswith("Bearer ya29.")


# --- terminal and transient failures -------------------------------------------------------------

def test_invalid_grant_at_the_exchange_needs_reauth_and_is_not_retried(auth_client, browser, user, google, sent,
                                                                       django_capture_on_commit_callbacks):
    created = _start(auth_client)
    _callback(browser, google.consent(created["authorize_url"], account=ACCOUNT), django_capture_on_commit_callbacks)
    google.expire_codes()
    result = _exchange(sent)  # returns: a terminal answer is recorded, not raised for a retry
    assert result["status"] == "needs_reauth" and result["code"] == "invalid_grant"
    final = auth_client.get(f"/api/v1/connections/{created['id']}").json()
    assert final["status"] == "needs_reauth" and "connect again" in final["last_error"]
    assert len(google.requests_to("/token")) == 1 and _secrets(user) == [] and sent == []


def test_revoked_consent_at_refresh_needs_reauth_and_stops(auth_client, browser, user, google, sent,
                                                           django_capture_on_commit_callbacks):
    final = _connect(auth_client, browser, google, sent, django_capture_on_commit_callbacks)
    google.revoke_account(ACCOUNT)  # the user removed Aiemaily at myaccount.google.com
    with pytest.raises(VaultRefusal, match="needs sign-in"):
        oauth_access_lease(str(user.pk), final["id"], "oauth_access_token")
    after = auth_client.get(f"/api/v1/connections/{final['id']}").json()
    assert after["status"] == "needs_reauth" and "connect again" in after["last_error"]
    assert _secrets(user) == []  # a dead refresh token is destroyed, not kept
    with pytest.raises(VaultRefusal, match="needs_reauth"):
        oauth_access_lease(str(user.pk), final["id"], "oauth_access_token")
    assert len([r for r in google.requests_to("/token") if r.form["grant_type"] == "refresh_token"]) == 1
    assert _audit(user)[-1] == ("refused", "vault", "oauth_access_token")


def test_an_unreachable_google_keeps_the_code_for_the_retry(auth_client, browser, user, google, sent,
                                                           django_capture_on_commit_callbacks):
    created = _start(auth_client)
    _callback(browser, google.consent(created["authorize_url"], account=ACCOUNT), django_capture_on_commit_callbacks)
    [(_, args)] = sent
    google.fail_token_endpoint = 503
    with pytest.raises(ProviderUnavailable):
        oauth_vault.exchange(owner_id=args[0], connection_id=args[1], attempt_id=args[2], grant_secret_id=args[3])
    assert [s.purpose for s in _secrets(user)] == ["oauth_grant"]  # rolled back: still sealed, still pending
    assert _connection(user, created["id"]).status == "pending"
    google.fail_token_endpoint = None
    assert oauth_exchange(*args)["status"] == "active"


def test_when_retries_run_out_the_user_is_told(auth_client, browser, user, google, sent,
                                               django_capture_on_commit_callbacks):
    created = _start(auth_client)
    _callback(browser, google.consent(created["authorize_url"], account=ACCOUNT), django_capture_on_commit_callbacks)
    [(_, args)] = sent
    google.fail_token_endpoint = 503
    result = oauth_exchange.apply(args=args, retries=oauth_exchange.max_retries).get()
    assert result["status"] == "error"
    final = _connection(user, created["id"])
    assert final.status == "error" and "could not be reached" in final.last_error
    assert _secrets(user) == []


@pytest.mark.claim("isolated-decryption")
def test_a_tampered_sealed_code_is_refused_audited_and_reported(auth_client, browser, user, google, sent,
                                                                django_capture_on_commit_callbacks):
    created = _start(auth_client)
    _callback(browser, google.consent(created["authorize_url"], account=ACCOUNT), django_capture_on_commit_callbacks)
    [(_, args)] = sent
    with owner_scope(user):
        grant = Secret.objects.for_owner(user).get(pk=args[3])
        tampered = bytearray(grant.sealed)
        tampered[-1] ^= 1
        Secret.objects.for_owner(user).filter(pk=grant.pk).update(sealed=bytes(tampered))
    with pytest.raises(VaultRefusal, match="did not open"):
        oauth_exchange(*args)
    final = _connection(user, created["id"])
    assert final.status == "error" and "could not be completed" in final.last_error
    assert _secrets(user) == [] and google.requests_to("/token") == []
    assert ("refused", "vault", "oauth_grant") in _audit(user)


def test_a_redelivered_exchange_does_nothing(auth_client, browser, user, google, sent,
                                            django_capture_on_commit_callbacks):
    created = _start(auth_client)
    _callback(browser, google.consent(created["authorize_url"], account=ACCOUNT), django_capture_on_commit_callbacks)
    [(_, args)] = sent
    assert oauth_exchange(*args)["status"] == "active"
    assert oauth_exchange(*args)["status"] == "already_done"
    assert len(google.requests_to("/token")) == 1
    assert _connection(user, created["id"]).status == "active"


# --- the callback's checks -----------------------------------------------------------------------

@pytest.mark.parametrize("tamper", ["replayed", "forged", "expired", "missing", "other_provider"])
def test_a_bad_state_is_400_and_changes_nothing(auth_client, browser, user, google, sent, tamper,
                                                django_capture_on_commit_callbacks):
    created = _start(auth_client)
    location = google.consent(created["authorize_url"], account=ACCOUNT)
    parts = urlsplit(location)
    path, query = parts.path, parts.query
    if tamper == "replayed":
        assert _callback(browser, location, django_capture_on_commit_callbacks).status_code == 302
        sent.clear()
    elif tamper == "forged":
        query = query.replace("state=", "state=x")
    elif tamper == "expired":
        with owner_scope(user):
            OAuthAttempt.objects.for_owner(user).update(created_at=timezone.now() - timedelta(minutes=11))
    elif tamper == "missing":
        query = "&".join(p for p in query.split("&") if not p.startswith("state="))
    else:
        path = path.replace("/gmail/", "/microsoft/")
    before = _snapshot(user)
    with django_capture_on_commit_callbacks(execute=True):
        response = browser.get(f"{path}?{query}")
    assert response.status_code == 400
    assert b"not valid" in response.content and url_query(location)["code"].encode() not in response.content
    assert _snapshot(user) == before and sent == []


@pytest.mark.claim("owner-scoping")
def test_another_users_state_is_400_and_leaves_the_attempt_usable(auth_client, browser, user, google, sent,
                                                                   django_capture_on_commit_callbacks):
    created = _start(auth_client)
    location = google.consent(created["authorize_url"], account=ACCOUNT)
    mallory = Client()
    mallory.force_login(UserFactory())
    before = _snapshot(user)
    parts = urlsplit(location)
    with django_capture_on_commit_callbacks(execute=True):
        assert mallory.get(f"{parts.path}?{parts.query}").status_code == 400
    assert _snapshot(user) == before and sent == []
    assert _callback(browser, location, django_capture_on_commit_callbacks).status_code == 302


def test_the_callback_needs_a_signed_in_user(google, auth_client):
    created = _start(auth_client)
    location = google.consent(created["authorize_url"], account=ACCOUNT)
    parts = urlsplit(location)
    response = Client().get(f"{parts.path}?{parts.query}")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_declining_at_google_says_so(auth_client, browser, user, google, sent, django_capture_on_commit_callbacks):
    created = _start(auth_client)
    location = google.consent(created["authorize_url"], account=ACCOUNT, deny=True)
    assert url_query(location)["error"] == "access_denied"
    response = _callback(browser, location, django_capture_on_commit_callbacks)
    assert response.status_code == 302
    final = auth_client.get(f"/api/v1/connections/{created['id']}").json()
    assert final["status"] == "error" and final["last_error"].startswith("You declined access")
    assert _secrets(user) == [] and sent == []


@pytest.mark.parametrize("provider", ["gmail", "microsoft"])
def test_a_provider_that_is_not_configured_is_422_and_creates_nothing(auth_client, settings, provider):
    # 4xx, not 503: "not offered on this server" must not look like an outage a client retries.
    settings.GOOGLE_OAUTH_CLIENT_ID = None
    settings.MICROSOFT_CLIENT_ID = None
    response = auth_client.post("/api/v1/connections", {"provider": provider}, format="json")
    assert response.status_code == 422
    assert response.json() == {"error": {"code": "provider_not_configured",
                                          "message": "Connecting this provider is not configured on this server."}}
    assert auth_client.get("/api/v1/connections").json()["results"] == []


# --- disconnecting -------------------------------------------------------------------------------

def test_disconnect_revokes_at_google_and_destroys_the_token(auth_client, browser, user, google, sent,
                                                            django_capture_on_commit_callbacks):
    final = _connect(auth_client, browser, google, sent, django_capture_on_commit_callbacks)
    [refresh_token] = google.live_refresh_tokens()
    with django_capture_on_commit_callbacks(execute=True):
        assert auth_client.delete(f"/api/v1/connections/{final['id']}?keep_mail=false").status_code == 204
    [(name, args)] = sent
    assert name == "secrets_vault.tasks.oauth_revoke" and args[2] == "gmail"
    assert oauth_revoke(*args) == {"secret_id": args[3], "status": "destroyed", "revoked": True}
    [revoke] = google.requests_to("/revoke")
    assert revoke.form == {"token": refresh_token}
    assert google.live_refresh_tokens() == [] and _secrets(user) == []
    with owner_scope(user):
        events = AuditEvent.objects.for_owner(user).filter(action="delete", detail__startswith="revoked at Google")
        assert events.exists()
    assert oauth_revoke(*args)["status"] == "gone"  # a redelivered task finds nothing left


# --- concurrency ---------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True, databases=["default", "vault"])
def test_concurrent_refreshes_never_lose_a_rotated_refresh_token(auth_client, browser, user, google, sent,
                                                                  django_capture_on_commit_callbacks):
    """Google (here) rotates refresh tokens and kills the old one at once. Two vault workers
    refreshing the same connection together must not both start from the same token: the second
    would get invalid_grant and the connection would be lost. The row lock serialises them."""
    final = _connect(auth_client, browser, google, sent, django_capture_on_commit_callbacks)
    google.rotate_refresh_tokens, google.token_delay = True, 0.4
    leases, errors = run_together(lambda: oauth_vault.access_lease(owner_id=user.pk, connection_id=final["id"],
                                                                   purpose="oauth_access_token"), 2)
    assert errors == [] and len(leases) == 2
    used = [r.form["refresh_token"] for r in google.requests_to("/token") if r.form["grant_type"] == "refresh_token"]
    assert len(used) == 2 and used[0] != used[1]  # the second refresh started from the rotated token
    connection, stored = stored_refresh_token(user, final["id"])
    assert connection.status == "active"
    assert google.live_refresh_tokens() == [stored]
    for lease in leases:
        access = lease_open(lease.as_message(), owner_id=user.pk, connection_id=final["id"],
                            purpose="oauth_access_token").reveal()
        assert google.access_token_valid(access)


# --- the trust zones -----------------------------------------------------------------------------

SETTINGS_PROBE = """
import json, django
django.setup()
from django.conf import settings
from secrets_vault.oauth import google as google_oauth
from secrets_vault.oauth import microsoft as microsoft_oauth
result = {name: bool(getattr(settings, name)) for name in
          ("GOOGLE_OAUTH_CLIENT_ID", "GOOGLE_OAUTH_CLIENT_SECRET", "MICROSOFT_CLIENT_ID", "MICROSOFT_CLIENT_SECRET")}
for name, call in (("google", google_oauth._client_secret), ("microsoft", microsoft_oauth._app)):
    if name == "microsoft" and settings.MICROSOFT_CLIENT_SECRET:
        result[name] = "usable"  # creating the msal app would fetch the real authority's configuration
        continue
    try:
        call()
        result[name] = "usable"
    except Exception as exc:
        result[name] = type(exc).__name__
print("RESULT" + json.dumps(result))
"""


@pytest.mark.claim("isolated-decryption")
def test_only_the_vault_process_holds_the_client_secrets(tmp_path):
    canary = "GOCSPX-Canary-Client-Secret-5d1"
    extra = {"GOOGLE_OAUTH_CLIENT_ID": "id.apps.googleusercontent.com", "GOOGLE_OAUTH_CLIENT_SECRET": canary,
             "MICROSOFT_CLIENT_ID": "11111111-2222-3333-4444-555555555555", "MICROSOFT_CLIENT_SECRET": canary,
             # production web insists on a storage key folder; this probe reads no mail
             "AIEMAILY_STORAGE_KMS_LOCAL_DIR": str(tmp_path)}

    def probe(role, production):
        done = subprocess.run([sys.executable, "-c", SETTINGS_PROBE], cwd=ROOT, capture_output=True, text=True,
                              env=role_env(role, production=production, extra=extra), timeout=60)
        assert done.returncode == 0, done.stderr[-3000:]
        assert canary not in done.stdout + done.stderr
        line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))
        return json.loads(line[len("RESULT"):])

    # Even with the secrets in its environment by mistake, the web process does not take them.
    web = probe("web", production=True)
    assert web == {"GOOGLE_OAUTH_CLIENT_ID": True, "GOOGLE_OAUTH_CLIENT_SECRET": False, "MICROSOFT_CLIENT_ID": True,
                   "MICROSOFT_CLIENT_SECRET": False, "google": "VaultNotHere", "microsoft": "VaultNotHere"}
    assert probe("sync", production=False)["GOOGLE_OAUTH_CLIENT_SECRET"] is False
    vault = probe("vault", production=False)
    assert vault["GOOGLE_OAUTH_CLIENT_SECRET"] is True and vault["MICROSOFT_CLIENT_SECRET"] is True
    assert vault["google"] == "usable" and vault["microsoft"] == "usable"
