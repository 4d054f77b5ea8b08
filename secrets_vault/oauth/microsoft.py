"""The Microsoft identity platform (v2.0), worker-vault side: code exchange and refresh through msal.

Only worker-vault uses this: it needs MICROSOFT_CLIENT_SECRET. msal's ConfidentialClientApplication
fetches the authority's OpenID configuration, redeems the code with the PKCE verifier and checks the
id_token's nonce (acquire_token_by_auth_code_flow), and refreshes (acquire_token_by_refresh_token).

Microsoft has no endpoint to revoke one refresh token: `revoke` says so (False), the caller destroys
the token and tells the user where to withdraw consent themselves.
"""

import msal
import requests
from django.conf import settings

from secrets_vault.crypto import SecretStr
from secrets_vault.keystore import VaultNotHere
from secrets_vault.oauth.base import (
    GrantRevoked,
    ProviderRejected,
    ProviderUnavailable,
    Tokens,
    check_claims,
    http_session,
    unverified_claims,
)
from secrets_vault.oauth.scopes import MICROSOFT, MICROSOFT_IDENTITY

GRAPH = "https://graph.microsoft.com/"
# msal adds openid, profile and offline_access to every request and refuses them as input. We
# never ask for `profile` (least privilege: the address is all we need), so it is excluded.
MSAL_RESERVED = {"openid", "profile", "offline_access"}
# Errors after which only a new sign-in helps (AADSTS70008 expired, 70000 revoked, 65001 no consent).
_TERMINAL = {"invalid_grant", "interaction_required", "consent_required", "login_required"}
_TRANSIENT = {"temporarily_unavailable", "server_error"}
_KNOWN = {s.name.lower(): s.name for s in [*MICROSOFT_IDENTITY, *MICROSOFT.values()]}
WITHDRAW_HINT = ("Microsoft cannot revoke it for us: remove Aiemaily at account.live.com/consent/Manage "
                 "(personal accounts) or ask your administrator (work accounts).")


def _app() -> msal.ConfidentialClientApplication:
    if not settings.MICROSOFT_CLIENT_SECRET or not settings.MICROSOFT_CLIENT_ID:
        raise VaultNotHere("the Microsoft client secret is configured only in worker-vault")
    try:
        # instance_discovery=False: the authority is the operator's setting, not user input, so the
        # extra round trip to login.microsoftonline.com to vouch for it adds nothing (and tests
        # point the authority at a local server).
        # A fresh app (and token cache) per use: msal's in-memory cache would otherwise keep every
        # user's tokens in this process for as long as it lives.
        return msal.ConfidentialClientApplication(
            settings.MICROSOFT_CLIENT_ID, client_credential=settings.MICROSOFT_CLIENT_SECRET,
            authority=settings.MICROSOFT_AUTHORITY, instance_discovery=False, http_client=http_session(),
            exclude_scopes=["profile"], token_cache=msal.TokenCache(),
        )
    except (requests.RequestException, ValueError):
        raise ProviderUnavailable("Microsoft's sign-in service could not be reached; we will try again.",
                                  code="discovery") from None


def canonical_scopes(raw) -> tuple[str, ...]:
    """Microsoft's scope names without the Graph resource prefix, in their documented casing.

    The token endpoint may answer `https://graph.microsoft.com/mail.read` for what we asked as
    `Mail.Read`: the same permission. Unknown names are kept verbatim, so a broader grant shows.
    """
    names = raw.split() if isinstance(raw, str) else list(raw or ())
    out = []
    for name in names:
        short = name[len(GRAPH):] if name.lower().startswith(GRAPH) else name
        out.append(_KNOWN.get(short.lower(), name))
    return tuple(dict.fromkeys(out))


def graph_scopes(scope_names) -> list[str]:
    """The Graph scopes a refresh asks for: msal adds openid and offline_access itself (and refuses
    them as input), and the address (`email`) is only needed once, at sign-in."""
    return [s for s in scope_names if s not in MSAL_RESERVED and s != "email"]


def _raise_for_error(result: dict, action: str) -> None:
    error = str(result.get("error", ""))
    if not error:
        return
    if error in _TERMINAL:
        raise GrantRevoked("Microsoft no longer accepts Aiemaily's access (it expired, was revoked or "
                           "needs your consent again); please connect again.", code=error[:40])
    if error in _TRANSIENT:
        raise ProviderUnavailable("Microsoft's sign-in service is not answering; we will try again.", code=error[:40])
    raise ProviderRejected(f"Microsoft refused to {action}; please try again later.", code=error[:40])


def _tokens(result: dict) -> Tokens:
    if not result.get("access_token"):
        raise ProviderRejected("Microsoft's answer had no access token.", code="no_access_token")
    claims = {}
    if result.get("id_token"):
        claims = unverified_claims(result["id_token"])
        # The nonce was compared by msal already (auth-code flow); refresh answers carry none.
        check_claims(claims, audience=settings.MICROSOFT_CLIENT_ID, nonce=None)
    scopes = canonical_scopes(result["scope"]) if result.get("scope") else None
    if scopes is not None and result.get("refresh_token") and "offline_access" not in scopes:
        # offline_access is the permission to receive a refresh token: one arrived, so it was granted,
        # whether or not this answer lists it (Microsoft lists only the resource's scopes).
        scopes = (*scopes, "offline_access")
    return Tokens(
        access_token=SecretStr(result["access_token"]), expires_in=int(result.get("expires_in") or 0),
        refresh_token=SecretStr(result["refresh_token"]) if result.get("refresh_token") else None,
        scopes=scopes, email=claims.get("email") or claims.get("preferred_username") or "", claims=claims,
    )


def exchange_code(*, code: SecretStr, code_verifier: str, redirect_uri: str, nonce: str, scopes) -> Tokens:
    """Redeem the code for tokens. Web already matched `state` (by hash) and spent it, so the flow
    handed to msal carries a placeholder state on both sides; PKCE and nonce are the real ones."""
    app = _app()
    flow = {"state": "verified-by-web", "redirect_uri": redirect_uri, "scope": list(scopes),
            "code_verifier": code_verifier, "nonce": nonce}
    try:
        result = app.acquire_token_by_auth_code_flow(flow, {"state": "verified-by-web", "code": code.reveal()})
    except requests.RequestException:
        raise ProviderUnavailable("Microsoft's sign-in service could not be reached; we will try again.",
                                  code="network") from None
    except (RuntimeError, ValueError):
        # msal raises these for a nonce that does not match or an answer that is not JSON.
        raise ProviderRejected("Microsoft's answer did not match this sign-in.", code="mismatch") from None
    _raise_for_error(result, "complete the sign-in")
    return _tokens(result)


def refresh(*, refresh_token: SecretStr, scopes) -> Tokens:
    """A fresh access token for the Graph scopes; Microsoft rotates the refresh token every time."""
    app = _app()
    try:
        result = app.acquire_token_by_refresh_token(refresh_token.reveal(), scopes=graph_scopes(scopes))
    except requests.RequestException:
        raise ProviderUnavailable("Microsoft's sign-in service could not be reached; we will try again.",
                                  code="network") from None
    except ValueError:
        raise ProviderUnavailable("Microsoft's sign-in service answered garbage; we will try again.",
                                  code="not_json") from None
    _raise_for_error(result, "renew Aiemaily's access")
    return _tokens(result)


def revoke(*, token: SecretStr) -> bool:
    """The v2.0 endpoint has no per-token revocation (revokeSignInSessions would need a far broader
    Graph permission and signs the user out everywhere). Nothing to call: the caller destroys it."""
    return False
