"""Connecting Microsoft 365 / Outlook end to end against a local Microsoft identity platform
(tests/harness/oauth_servers.py), with msal doing discovery, the PKCE + nonce code redemption and refresh.

Microsoft differs from Google where it matters to us: the consent URL is built by hand in web (msal
would need the client secret and the network there), refresh tokens rotate on every refresh, and
there is no endpoint to revoke a token, so a refused or disconnected grant is destroyed and the
user is told where to withdraw consent.
"""

import json
import logging

import pytest

from aiemaily.ownership.binding import owner_scope
from secrets_vault.models import AuditEvent, Secret
from secrets_vault.oauth import grants as oauth_vault
from secrets_vault.oauth.base import pkce_challenge
from secrets_vault.oauth.microsoft import canonical_scopes
from secrets_vault.sealing import lease_open
from secrets_vault.tasks import oauth_access_lease, oauth_exchange, oauth_revoke
from secrets_vault.vault_services import VaultRefusal
from tests.harness.concurrency import run_together
from tests.harness.oauth_flow import (
    browser,
    callback,
    microsoft,
    microsoft_server,
    sent,
    start,
    stored_refresh_token,
    url_query,
)

__all__ = ["browser", "microsoft", "microsoft_server", "sent"]

pytestmark = [pytest.mark.django_db(databases=["default", "vault"])]

EVERYTHING = ["openid", "email", "offline_access", "Mail.Read", "Mail.ReadWrite", "Mail.Send"]
CALLBACK = "http://testserver/connections/oauth/microsoft/callback"
ACCOUNT = "grace@outlook.test"


def _start(auth_client, **body) -> dict:
    return start(auth_client, "microsoft", **body)


def _callback(browser, location: str, capture):
    return callback(browser, location, capture, expected=CALLBACK)


def _connect(auth_client, browser, microsoft, sent, capture, *, grant=None, **body) -> dict:
    created = _start(auth_client, **body)
    response = _callback(browser, microsoft.consent(created["authorize_url"], account=ACCOUNT, grant=grant), capture)
    assert response.status_code == 302 and response["Location"] == f"/connections/{created['id']}/"
    [(name, args)] = sent
    assert name == "secrets_vault.tasks.oauth_exchange"
    sent.clear()
    oauth_exchange(*args)
    return auth_client.get(f"/api/v1/connections/{created['id']}").json()


def _secrets(user):
    with owner_scope(user):
        return list(Secret.objects.for_owner(user))


@pytest.mark.claim("least-privilege-scopes")
@pytest.mark.claim("isolated-decryption")
def test_microsoft_connects_end_to_end(auth_client, browser, user, microsoft, sent, django_capture_on_commit_callbacks):
    created = _start(auth_client)
    url = created["authorize_url"]
    assert url.startswith(f"{microsoft.authority}/oauth2/v2.0/authorize?")
    q = url_query(url)
    assert q["scope"].split() == EVERYTHING  # no profile, no User.Read: the address is all we need
    assert (q["client_id"], q["redirect_uri"], q["response_type"]) == (microsoft.client_id, CALLBACK, "code")
    assert q["response_mode"] == "query" and q["code_challenge_method"] == "S256" and len(q["nonce"]) == 64
    assert microsoft.client_secret not in url

    location = microsoft.consent(url, account=ACCOUNT)
    code = url_query(location)["code"]
    assert _callback(browser, location, django_capture_on_commit_callbacks).status_code == 302
    assert [r.path for r in microsoft.requests] == ["/common/oauth2/v2.0/authorize"]  # web made no call
    [(_, args)] = sent
    assert oauth_exchange(*args)["status"] == "active"

    final = auth_client.get(f"/api/v1/connections/{created['id']}").json()
    assert final["status"] == "active" and final["email"] == ACCOUNT and final["last_error"] == ""
    assert final["requested_scopes"] == EVERYTHING
    assert sorted(final["granted_scopes"]) == sorted(EVERYTHING)
    assert final["capabilities"] == ["organise", "read", "send"]

    # msal: discovery, then the code redeemed with the verifier, the nonce checked, the secret posted.
    paths = [r.path for r in microsoft.requests]
    assert paths[1:] == ["/common/v2.0/.well-known/openid-configuration", "/common/oauth2/v2.0/token"]
    token_request = microsoft.requests[-1]
    assert token_request.form["code"] == code and token_request.form["client_secret"] == microsoft.client_secret
    assert pkce_challenge(token_request.form["code_verifier"]) == q["code_challenge"]
    assert set(token_request.form["scope"].split()) == set(EVERYTHING)
    for request in microsoft.requests[:-1]:
        assert microsoft.client_secret not in request.text()

    [stored] = _secrets(user)
    [refresh_token] = microsoft.live_refresh_tokens()
    assert stored.purpose == "oauth_refresh_token" and refresh_token.encode() not in bytes(stored.ciphertext)


@pytest.mark.claim("isolated-decryption")
def test_refresh_rotates_the_stored_refresh_token(auth_client, browser, user, microsoft, sent,
                                                  django_capture_on_commit_callbacks):
    final = _connect(auth_client, browser, microsoft, sent, django_capture_on_commit_callbacks)
    [first] = microsoft.live_refresh_tokens()
    lease = oauth_access_lease(str(user.pk), final["id"], "oauth_access_token")
    access = lease_open(lease, owner_id=user.pk, connection_id=final["id"], purpose="oauth_access_token").reveal()
    assert microsoft.access_token_valid(access)
    [second] = microsoft.live_refresh_tokens()
    assert second != first
    connection, stored = stored_refresh_token(user, final["id"])
    assert stored == second
    refresh = microsoft.requests[-1]
    assert refresh.form["grant_type"] == "refresh_token" and refresh.form["refresh_token"] == first
    assert set(refresh.form["scope"].split()) == {"openid", "offline_access", "Mail.Read", "Mail.ReadWrite",
                                                  "Mail.Send"}


@pytest.mark.django_db(transaction=True, databases=["default", "vault"])
def test_concurrent_refreshes_keep_the_rotated_token(auth_client, browser, user, microsoft, sent,
                                                     django_capture_on_commit_callbacks):
    final = _connect(auth_client, browser, microsoft, sent, django_capture_on_commit_callbacks)
    microsoft.token_delay = 0.4
    _, errors = run_together(lambda: oauth_vault.access_lease(owner_id=user.pk, connection_id=final["id"],
                                                              purpose="oauth_access_token"), 3)
    assert errors == []
    connection, stored = stored_refresh_token(user, final["id"])
    assert connection.status == "active" and microsoft.live_refresh_tokens() == [stored]


@pytest.mark.claim("no-plaintext-leaks")
def test_no_code_verifier_token_or_client_secret_reaches_the_logs(auth_client, browser, user, microsoft, sent, caplog,
                                                                 django_capture_on_commit_callbacks):
    caplog.set_level(logging.DEBUG)
    final = _connect(auth_client, browser, microsoft, sent, django_capture_on_commit_callbacks)
    results = [oauth_access_lease(str(user.pk), final["id"], "oauth_access_token")]
    forms = [r.form for r in microsoft.requests if r.path.endswith("/token")]
    secret_values = {microsoft.client_secret, *microsoft.refresh_tokens, *microsoft.access_tokens,
                     *(form.get(k) for form in forms for k in ("code", "code_verifier", "refresh_token"))}
    secret_values.discard(None)
    assert len(secret_values) >= 6 and caplog.records
    leaked = [value[:12] for value in secret_values if value in caplog.text or value in json.dumps(results)]
    assert leaked == []


@pytest.mark.claim("least-privilege-scopes")
def test_a_narrower_grant_works_with_the_reduced_capabilities(auth_client, browser, microsoft, sent,
                                                              django_capture_on_commit_callbacks):
    final = _connect(auth_client, browser, microsoft, sent, django_capture_on_commit_callbacks,
                     grant=["openid", "email", "offline_access", "Mail.Read"])
    assert final["status"] == "active"
    assert final["requested_scopes"] == EVERYTHING
    assert sorted(final["granted_scopes"]) == sorted(["openid", "email", "offline_access", "Mail.Read"])
    assert final["capabilities"] == ["read"]


@pytest.mark.claim("least-privilege-scopes")
def test_a_broader_grant_is_refused_destroyed_and_explained(auth_client, browser, user, microsoft, sent,
                                                            django_capture_on_commit_callbacks):
    final = _connect(auth_client, browser, microsoft, sent, django_capture_on_commit_callbacks,
                     grant=[*EVERYTHING, "Contacts.Read"])
    assert final["status"] == "error"
    assert final["last_error"].startswith("Microsoft granted more access than we asked for; we refused it.")
    assert "account.live.com/consent/Manage" in final["last_error"]
    assert _secrets(user) == []
    with owner_scope(user):
        refusal = AuditEvent.objects.for_owner(user).get(action="refused")
    assert "Contacts.Read" in refusal.detail and "cannot revoke" in refusal.detail


def test_invalid_grant_at_the_exchange_needs_reauth(auth_client, browser, user, microsoft, sent,
                                                    django_capture_on_commit_callbacks):
    created = _start(auth_client)
    _callback(browser, microsoft.consent(created["authorize_url"], account=ACCOUNT), django_capture_on_commit_callbacks)
    [(_, args)] = sent
    microsoft.expire_codes()
    assert oauth_exchange(*args)["status"] == "needs_reauth"
    final = auth_client.get(f"/api/v1/connections/{created['id']}").json()
    assert final["status"] == "needs_reauth" and "connect again" in final["last_error"]
    assert _secrets(user) == []


def test_a_revoked_refresh_token_needs_reauth(auth_client, browser, user, microsoft, sent,
                                              django_capture_on_commit_callbacks):
    final = _connect(auth_client, browser, microsoft, sent, django_capture_on_commit_callbacks)
    microsoft.revoke_account(ACCOUNT)
    with pytest.raises(VaultRefusal):
        oauth_access_lease(str(user.pk), final["id"], "oauth_access_token")
    after = auth_client.get(f"/api/v1/connections/{final['id']}").json()
    assert after["status"] == "needs_reauth" and _secrets(user) == []


def test_declining_at_microsoft_says_so(auth_client, browser, user, microsoft, sent,
                                        django_capture_on_commit_callbacks):
    created = _start(auth_client)
    location = microsoft.consent(created["authorize_url"], account=ACCOUNT, deny=True)
    assert _callback(browser, location, django_capture_on_commit_callbacks).status_code == 302
    final = auth_client.get(f"/api/v1/connections/{created['id']}").json()
    assert final["status"] == "error" and final["last_error"].startswith("You declined access")
    assert sent == [] and _secrets(user) == []


def test_disconnect_destroys_the_token_and_records_that_microsoft_cannot_revoke(
        auth_client, browser, user, microsoft, sent, django_capture_on_commit_callbacks):
    final = _connect(auth_client, browser, microsoft, sent, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        assert auth_client.delete(f"/api/v1/connections/{final['id']}").status_code == 204
    [(name, args)] = sent
    assert name == "secrets_vault.tasks.oauth_revoke"
    assert oauth_revoke(*args)["revoked"] is False
    assert _secrets(user) == []
    with owner_scope(user):
        assert AuditEvent.objects.for_owner(user).filter(
            action="delete", detail="Microsoft has no revocation endpoint; destroyed").exists()


def test_scope_names_are_canonicalised_but_never_invented():
    answer = "https://graph.microsoft.com/mail.read openid EMAIL https://graph.microsoft.com/Files.Read"
    assert canonical_scopes(answer) == ("Mail.Read", "openid", "email", "https://graph.microsoft.com/Files.Read")
