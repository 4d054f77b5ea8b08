"""Google's token endpoints, worker-vault side: code exchange, refresh, revocation, userinfo.

Only worker-vault imports this for real work: it needs GOOGLE_OAUTH_CLIENT_SECRET, which settings
give to no other process. The libraries are Google's own: google-auth-oauthlib (requests-oauthlib
underneath) redeems the code with PKCE, google-auth refreshes; revocation and userinfo are single
documented HTTP calls (https://developers.google.com/identity/protocols/oauth2/web-server).
"""

import time

import requests
from django.conf import settings
from google.auth import exceptions as google_exceptions
from google.auth.transport.requests import Request as GoogleRequest
from google.oauth2.credentials import Credentials
from google_auth_oauthlib.flow import Flow
from oauthlib.oauth2.rfc6749 import errors as oauth_errors

from secrets_vault.crypto import SecretStr
from secrets_vault.keystore import VaultNotHere
from secrets_vault.oauth.base import (
    TIMEOUT,
    GrantRevoked,
    ProviderRejected,
    ProviderUnavailable,
    Tokens,
    ca_bundle,
    check_claims,
    http_session,
    unverified_claims,
)

ISSUERS = ("https://accounts.google.com", "accounts.google.com")
_EXPIRED = "Google no longer accepts Aiemaily's access (it expired or was revoked); please connect again."


def _client_secret() -> str:
    if not settings.GOOGLE_OAUTH_CLIENT_SECRET or not settings.GOOGLE_OAUTH_CLIENT_ID:
        raise VaultNotHere("the Google client secret is configured only in worker-vault")
    return settings.GOOGLE_OAUTH_CLIENT_SECRET


def _flow(redirect_uri: str, code_verifier: str) -> Flow:
    config = {"web": {"client_id": settings.GOOGLE_OAUTH_CLIENT_ID, "client_secret": _client_secret(),
                      "auth_uri": settings.GOOGLE_AUTH_URI, "token_uri": settings.GOOGLE_TOKEN_URI}}
    # scopes=None: oauthlib would otherwise raise on any difference between asked and granted scopes;
    # comparing them is our job (secrets_vault.oauth.scopes.compare), with a decision the user sees.
    flow = Flow.from_client_config(config, scopes=None, redirect_uri=redirect_uri, code_verifier=code_verifier,
                                   autogenerate_code_verifier=False)
    flow.oauth2session.register_compliance_hook("access_token_response", _raise_if_unavailable)
    return flow


def _raise_if_unavailable(response: requests.Response) -> requests.Response:
    if response.status_code >= 500:
        raise ProviderUnavailable("Google's sign-in service is not answering; we will try again.",
                                  code=f"http_{response.status_code}")
    return response


def _expires_in(value) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def exchange_code(*, code: SecretStr, code_verifier: str, redirect_uri: str, nonce: str, scopes=None) -> Tokens:
    """Redeem an authorization code (PKCE S256, client secret) for tokens, and learn the address."""
    flow = _flow(redirect_uri, code_verifier)
    try:
        token = flow.fetch_token(code=code.reveal(), timeout=TIMEOUT, verify=ca_bundle())
    except oauth_errors.InvalidGrantError:
        raise GrantRevoked("Google did not accept the sign-in (it expired or was already used); "
                           "please connect again.", code="invalid_grant") from None
    except oauth_errors.OAuth2Error as exc:
        raise ProviderRejected("Google refused to complete the sign-in; please try again later.",
                               code=str(exc.error)[:40]) from None
    except requests.RequestException:
        raise ProviderUnavailable("Google's sign-in service could not be reached; we will try again.",
                                  code="network") from None
    claims = {}
    if token.get("id_token"):
        claims = unverified_claims(token["id_token"])
        check_claims(claims, audience=settings.GOOGLE_OAUTH_CLIENT_ID, nonce=nonce, issuers=ISSUERS)
    access = SecretStr(token["access_token"])
    email = claims.get("email", "") if claims.get("email_verified", True) else ""
    if not email:
        email = userinfo(access_token=access).get("email", "")
    scope = token.get("scope")
    return Tokens(
        access_token=access, expires_in=_expires_in(token.get("expires_in")),
        refresh_token=SecretStr(token["refresh_token"]) if token.get("refresh_token") else None,
        scopes=tuple(scope.split()) if isinstance(scope, str) else (tuple(scope) if scope else None),
        email=email, claims=claims,
    )


def refresh(*, refresh_token: SecretStr, scopes=None) -> Tokens:
    """A fresh access token; Google may also answer with a new (rotated) refresh token."""
    credentials = Credentials(token=None, refresh_token=refresh_token.reveal(), token_uri=settings.GOOGLE_TOKEN_URI,
                              client_id=settings.GOOGLE_OAUTH_CLIENT_ID, client_secret=_client_secret())
    try:
        credentials.refresh(GoogleRequest(session=http_session()))
    except google_exceptions.RefreshError as exc:
        details = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
        if details.get("error") == "invalid_grant":
            raise GrantRevoked(_EXPIRED, code="invalid_grant") from None
        if getattr(exc, "retryable", False):
            raise ProviderUnavailable("Google's sign-in service is not answering; we will try again.",
                                      code="retryable") from None
        raise ProviderRejected("Google refused to renew Aiemaily's access; please try again later.",
                               code=str(details.get("error", "refresh_error"))[:40]) from None
    except google_exceptions.TransportError:
        raise ProviderUnavailable("Google's sign-in service could not be reached; we will try again.",
                                  code="network") from None
    expires_in = int(credentials.expiry.timestamp() - time.time()) if credentials.expiry else 0
    rotated = credentials.refresh_token
    return Tokens(access_token=SecretStr(credentials.token), expires_in=max(0, expires_in),
                  refresh_token=SecretStr(rotated) if rotated and rotated != refresh_token.reveal() else None)


def revoke(*, token: SecretStr) -> bool:
    """Revoke a token and with it the whole grant. True when Google no longer honours it.

    Google answers 400 `invalid_token` for a token that is already revoked or expired: as good as done.
    """
    try:
        response = http_session().post(settings.GOOGLE_REVOKE_URI, data={"token": token.reveal()},
                                       headers={"Content-Type": "application/x-www-form-urlencoded"},
                                       timeout=TIMEOUT)
    except requests.RequestException:
        raise ProviderUnavailable("Google could not be reached to revoke access; we will try again.",
                                  code="network") from None
    if response.status_code >= 500:
        raise ProviderUnavailable("Google could not revoke access right now; we will try again.",
                                  code=f"http_{response.status_code}")
    if response.status_code == 200:
        return True
    if response.status_code == 400 and _error_code(response) == "invalid_token":
        return True
    raise ProviderRejected("Google refused to revoke access.", code=f"http_{response.status_code}")


def userinfo(*, access_token: SecretStr) -> dict:
    """The OpenID Connect userinfo of the signed-in account (used when no id_token came back)."""
    try:
        response = http_session().get(settings.GOOGLE_USERINFO_URI, timeout=TIMEOUT,
                                      headers={"Authorization": f"Bearer {access_token.reveal()}"})
    except requests.RequestException:
        raise ProviderUnavailable("Google could not be reached; we will try again.", code="network") from None
    if response.status_code >= 500:
        raise ProviderUnavailable("Google is not answering; we will try again.", code=f"http_{response.status_code}")
    if response.status_code != 200:
        raise ProviderRejected("Google did not tell us which account was connected.",
                               code=f"http_{response.status_code}")
    body = response.json()
    return body if body.get("email_verified", True) else {}


def _error_code(response: requests.Response) -> str:
    try:
        return str(response.json().get("error", ""))
    except ValueError:
        return ""
