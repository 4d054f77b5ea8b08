"""Google-signed OIDC tokens, as Cloud Pub/Sub puts them on a push (`Authorization: Bearer <JWT>`).

Verified with google-auth (`google.auth.jwt.decode`: RS256 signature against Google's published
certificates, then `iat`/`exp`), and then the claims a push subscription is configured with: the
audience is our push endpoint, the issuer is Google, the e-mail is the push service account and
Google says it is verified. Anything else is someone else's token, however well signed.

Certificates. google-auth's `id_token.verify_token` downloads the certificates on every call; a
webhook cannot afford that, so they are fetched here once, cached for the Cache-Control max-age
Google sends (bounded), and fetched again when a token names a key id we do not know (Google
rotates keys), at most once per REFETCH_SECONDS so a flood of tokens with invented key ids cannot
turn into a flood of requests to Google.
"""

import re
import threading
import time

import requests
from django.conf import settings
from google.auth import exceptions as google_exceptions
from google.auth import jwt

from aiemaily.webhooks.http import Rejected
from aiemaily.webhooks.models import Verdict

ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
REFETCH_SECONDS = 30  # unknown key id: fetch again, but not more often than this
MAX_CACHE_SECONDS = 24 * 3600
DEFAULT_CACHE_SECONDS = 3600
_MAX_AGE = re.compile(r"max-age=(\d+)")


class CertificateCache:
    """The certificate endpoint's {kid: PEM} map, held in process memory (public keys, not secrets)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._url = ""
        self._certs: dict[str, str] = {}
        self._expires = 0.0
        self._refetched = -REFETCH_SECONDS  # when an unknown key id last made us fetch

    def get(self, *, want_kid: str | None = None) -> dict[str, str]:
        url = settings.AIEMAILY_GOOGLE_CERTS_URL
        now = time.monotonic()
        with self._lock:
            stale = url != self._url or now >= self._expires
            unknown = (not stale and want_kid is not None and want_kid not in self._certs
                       and now - self._refetched >= REFETCH_SECONDS)
            if unknown:
                self._refetched = now
            if stale or unknown:
                self._fetch(url, now)
            return self._certs

    def clear(self) -> None:
        with self._lock:
            self._url, self._certs, self._expires = "", {}, 0.0
            self._refetched = -REFETCH_SECONDS

    def _fetch(self, url: str, now: float) -> None:
        try:
            response = requests.get(url, timeout=5, verify=settings.AIEMAILY_PROVIDER_CA_BUNDLE or True,
                                    allow_redirects=False)
            response.raise_for_status()
            certs = response.json()
        except (requests.RequestException, ValueError):
            # Keep what we had (if anything); an outage at Google must not make every push unverifiable
            # sooner than the keys we hold expire. Try again after REFETCH_SECONDS.
            self._expires = now + REFETCH_SECONDS if not self._certs else self._expires
            return
        if not isinstance(certs, dict) or not all(isinstance(v, str) for v in certs.values()):
            return
        match = _MAX_AGE.search(response.headers.get("Cache-Control", ""))
        seconds = min(int(match.group(1)), MAX_CACHE_SECONDS) if match else DEFAULT_CACHE_SECONDS
        self._url, self._certs, self._expires = url, dict(certs), now + seconds


certificates = CertificateCache()


def _decode(token: str, certs: dict[str, str]) -> dict:
    return jwt.decode(token, certs=certs, audience=None, clock_skew_in_seconds=settings.AIEMAILY_GMAIL_PUSH_CLOCK_SKEW)


def verify_push_token(authorization: str) -> dict:
    """The verified claims of a push's bearer token, or Rejected with the verdict (status 403)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token or len(token) > 4096:
        raise Rejected(Verdict.BAD_SIGNATURE, 403)
    try:
        kid = jwt.decode_header(token).get("kid")
    except (google_exceptions.GoogleAuthError, ValueError, TypeError):
        raise Rejected(Verdict.BAD_SIGNATURE, 403) from None
    certs = certificates.get(want_kid=kid if isinstance(kid, str) else None)
    if not certs:
        raise Rejected(Verdict.BAD_SIGNATURE, 403)  # nothing to verify against: nothing is authentic
    try:
        claims = _decode(token, certs)
    except (google_exceptions.GoogleAuthError, ValueError, TypeError) as exc:
        # google-auth checks the signature first, then iat/exp: a freshness message means it was signed.
        message = str(exc)
        if message.startswith("Token used too early"):
            raise Rejected(Verdict.FUTURE, 403) from None
        if message.startswith("Token expired"):
            raise Rejected(Verdict.STALE, 403) from None
        raise Rejected(Verdict.BAD_SIGNATURE, 403) from None
    audience = settings.AIEMAILY_GMAIL_PUSH_AUDIENCE
    account = settings.AIEMAILY_GMAIL_PUSH_SERVICE_ACCOUNT
    if (not audience or not account or claims.get("aud") != audience or claims.get("iss") not in ISSUERS
            or claims.get("email") != account or claims.get("email_verified") is not True):
        raise Rejected(Verdict.BAD_AUDIENCE, 403)
    return claims
