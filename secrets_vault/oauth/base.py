"""What the OAuth code of both tiers shares: purposes, PKCE/nonce helpers, token results, errors, HTTP.

Importable anywhere (no secrets, no database): web uses the purposes and the PKCE/nonce helpers to
build a consent URL; worker-vault uses the rest to talk to the providers' token endpoints.
"""

import base64
import hashlib
import logging
import time
from dataclasses import dataclass, field

import jwt
import requests
from django.conf import settings

from secrets_vault.crypto import SecretStr

# Secret purposes (secrets_vault.models.Purpose) and seal/lease purposes of the OAuth flow.
GRANT_PURPOSE = "oauth_grant"  # the authorization code, sealed by web on arrival
REFRESH_PURPOSE = "oauth_refresh_token"  # stored under the owner's DEK; never leaves the vault
ACCESS_PURPOSE = "oauth_access_token"  # leased to the sync pool, short-lived
PKCE_PURPOSE = "oauth_pkce"  # the sealed verifier + nonce + redirect URI on the OAuthAttempt row

TIMEOUT = 20
PROVIDER_NAMES = {"gmail": "Google", "microsoft": "Microsoft"}

# requests-oauthlib and oauthlib print whole request and response bodies at DEBUG, and msal's
# token cache logs each token request ("event=…") with the authorization code and the PKCE
# verifier in clear (it masks only the tokens). Nothing we need is said there, so these loggers
# never go below WARNING, whatever LOG_LEVEL says (tests/test_oauth_*.py: ..._reaches_the_logs).
# Also pinned in settings.LOGGING; repeated here so a process that configures logging differently
# (a management shell, a test) still never logs a code or a verifier.
for _name in ("requests_oauthlib", "oauthlib", "msal"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: BASE64URL(SHA256(ASCII(verifier))) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def nonce_digest(nonce: str) -> str:
    """What goes on the wire as `nonce` (and comes back in the id_token), as msal does it.

    OIDC recommends sending a hash of a value kept private; msal's auth-code flow sends
    SHA-256(nonce) in hex and compares the id_token's nonce with it. Google gets the same form.
    """
    return hashlib.sha256(nonce.encode("ascii")).hexdigest()


@dataclass(frozen=True, repr=False)
class Tokens:
    """One token endpoint answer. Secrets stay in SecretStr; `repr` shows only the shape."""

    access_token: SecretStr
    expires_in: int
    refresh_token: SecretStr | None = None
    scopes: tuple[str, ...] | None = None  # None: the provider did not say (RFC 6749: as requested)
    email: str = ""
    claims: dict = field(default_factory=dict)  # id_token claims: identity, not secrets

    def __repr__(self):
        return f"<Tokens scopes={self.scopes} expires_in={self.expires_in} refresh={self.refresh_token is not None}>"


class OAuthError(Exception):
    """A provider answer we cannot use. `message` is for the user; `code` is the provider's error code.

    Neither ever contains a token, a code or a client secret.
    """

    def __init__(self, message: str, *, code: str = ""):
        super().__init__(message)
        self.message, self.code = message, code


class GrantRevoked(OAuthError):
    """invalid_grant, revoked consent, an expired code: terminal. The user must sign in again."""


class ProviderRejected(OAuthError):
    """Any other refusal (a misconfigured client, a mismatched response): terminal, shown as an error."""


class ProviderUnavailable(OAuthError):
    """Network failure or a 5xx: transient. The task retries; nothing was consumed on our side."""


def ca_bundle() -> str | bool:
    """What `requests` verifies the providers' certificates against (the system store by default)."""
    return settings.AIEMAILY_OAUTH_CA_BUNDLE or True


class _Session(requests.Session):
    """requests with a default timeout, and our CA bundle winning over REQUESTS_CA_BUNDLE.

    requests lets the environment's bundle override a session's `verify` (psf/requests#3829);
    AIEMAILY_OAUTH_CA_BUNDLE is the operator's explicit choice for these endpoints, so it wins.
    Proxies from the environment still apply (an egress proxy is a deployment's business).
    """

    def __init__(self):
        super().__init__()
        self.verify = ca_bundle()

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if self.verify is not True and verify in (None, True):
            merged["verify"] = self.verify
        return merged

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", TIMEOUT)
        return super().request(method, url, **kwargs)


def http_session() -> requests.Session:
    """The session every token, revocation and userinfo call goes through."""
    return _Session()


def unverified_claims(id_token: str) -> dict:
    """The claims of an id_token received straight from the token endpoint.

    OIDC Core 3.1.3.7 (6) lets a client that received the id_token directly from the token endpoint
    over TLS rely on TLS instead of the signature; callers still check iss/aud/exp/nonce.
    """
    try:
        return jwt.decode(id_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise ProviderRejected("The provider's identity token could not be read.", code="bad_id_token") from None


def check_claims(claims: dict, *, audience: str, nonce: str | None, issuers: tuple[str, ...] = ()) -> None:
    """Refuse an id_token meant for another client, another sign-in, or already expired."""
    audiences = claims.get("aud") if isinstance(claims.get("aud"), list) else [claims.get("aud")]
    problems = []
    if audience not in audiences:
        problems.append("audience")
    if issuers and claims.get("iss") not in issuers:
        problems.append("issuer")
    if not isinstance(claims.get("exp"), int | float) or claims["exp"] < time.time() - 60:
        problems.append("expiry")
    if nonce is not None and claims.get("nonce") != nonce_digest(nonce):
        problems.append("nonce")
    if problems:
        raise ProviderRejected("The provider's identity token did not match this sign-in.",
                               code="id_token_" + "_".join(problems))
