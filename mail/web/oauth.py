"""OAuth for Gmail and Microsoft, web side: start a consent trip, take the callback, queue revocation.

Web never holds a client secret and never sees a token (DESIGN.md, trust zones). It builds the
consent URL with PKCE (S256) and a random `state` of which only the SHA-256 is stored; the PKCE
verifier, the OIDC nonce and the redirect URI are sealed to the vault's public key on the
OAuthAttempt row (web cannot open them again). The callback checks `state` against the signed-in
user's own attempts, seals the authorization code at once and hands everything to worker-vault,
which redeems it (secrets_vault/oauth/grants.py).
"""

import hashlib
import json
import re
import secrets
from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_GET
from google_auth_oauthlib.flow import Flow
from rest_framework import exceptions, serializers, status

from mail.models import Connection, OAuthAttempt
from mail.services import mailbox_slot_check
from secrets_vault.crypto import SecretStr
from secrets_vault.oauth import scopes
from secrets_vault.oauth.base import GRANT_PURPOSE, PKCE_PURPOSE, PROVIDER_NAMES, nonce_digest, pkce_challenge
from secrets_vault.queue import oauth_exchange
from secrets_vault.sealing import seal_for_vault
from secrets_vault.services import secret_submit

ATTEMPT_LIFETIME = timedelta(minutes=10)
MAX_CODE_LENGTH = 4096  # real codes are a few hundred characters; anything longer is not one
_ERROR_CODE = re.compile(r"^[a-z_]{1,40}$")
INVALID_CALLBACK = ("This sign-in answer is not valid: it was already used, it expired, or it was not started "
                    "from your account. Start connecting again.")


class OAuthNotConfigured(exceptions.APIException):
    # 422, not 503: the request is understood and this server will never do it as configured, so a
    # client must not retry it as it would an outage (docs/api.md).
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "provider_not_configured"
    default_detail = "Connecting this provider is not configured on this server."


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _client_id(provider: str) -> str:
    client_id = settings.GOOGLE_OAUTH_CLIENT_ID if provider == "gmail" else settings.MICROSOFT_CLIENT_ID
    if not client_id:
        raise OAuthNotConfigured()
    return client_id


# --- starting a consent trip -----------------------------------------------------------------------

def _google_url(*, client_id, scope_names, redirect_uri, state, verifier, nonce, login_hint) -> str:
    """Google's own library builds the URL; it needs only the public client id (no secret, no I/O)."""
    config = {"web": {"client_id": client_id, "auth_uri": settings.GOOGLE_AUTH_URI,
                      "token_uri": settings.GOOGLE_TOKEN_URI}}
    flow = Flow.from_client_config(config, scopes=scope_names, redirect_uri=redirect_uri, code_verifier=verifier,
                                   autogenerate_code_verifier=False)
    extra = {"login_hint": login_hint} if login_hint else {}
    url, _ = flow.authorization_url(access_type="offline", include_granted_scopes="true", prompt="consent",
                                    state=state, nonce=nonce_digest(nonce), **extra)
    return url


def _microsoft_url(*, client_id, scope_names, redirect_uri, state, verifier, nonce, login_hint) -> str:
    """The v2.0 authorize URL with the parameters msal's initiate_auth_code_flow sends.

    Built here rather than by msal: msal's application objects fetch the authority's OpenID
    configuration over the network when created, and the confidential one needs the client secret,
    which web must not hold. The token endpoint is discovered by msal in worker-vault.
    """
    params = {"client_id": client_id, "response_type": "code", "redirect_uri": redirect_uri,
              "response_mode": "query", "scope": " ".join(scope_names), "state": state,
              "code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256",
              "nonce": nonce_digest(nonce)}
    params.update({"login_hint": login_hint} if login_hint else {"prompt": "select_account"})
    return f"{settings.MICROSOFT_AUTHORITY}/oauth2/v2.0/authorize?{urlencode(params)}"


URL_BUILDERS = {"gmail": _google_url, "microsoft": _microsoft_url}


def _scopes_to_ask(provider: str, connection: Connection, wanted: list[str]) -> list[str]:
    """Incremental authorization (Google): a working connection asks only for what it lacks.

    include_granted_scopes=true makes Google's answer cover the earlier grant as well. Microsoft's
    consent is cumulative per app by itself, and its code must be redeemed for the full set.
    """
    if provider != "gmail" or connection.status != Connection.Status.ACTIVE or connection.oauth_secret_id is None:
        return wanted
    extra, missing = scopes.compare(provider, wanted, connection.granted_scopes)
    if extra:
        # Google would fold the earlier, larger grant into the answer and we would have to refuse it.
        raise serializers.ValidationError(
            {"capabilities": "To give Aiemaily less access, disconnect this mailbox and connect it again."})
    return [name for name in wanted if name in missing] or wanted


def oauth_start(*, owner, provider: str, capabilities=None, redirect_uri: str, connection=None):
    """Begin connecting (or re-authorising / upgrading `connection`): returns (connection, authorize_url)."""
    if provider not in URL_BUILDERS:
        raise ValueError(f"not an OAuth provider: {provider}")
    client_id = _client_id(provider)
    wanted = scopes.scopes_for(provider, capabilities or scopes.CAPABILITIES)
    if connection is None:
        mailbox_slot_check(owner=owner)  # a new mailbox; re-authorising an existing one is not limited
        connection = Connection.objects.create(owner=owner, provider=provider, status=Connection.Status.PENDING,
                                               requested_scopes=wanted)
        ask = wanted
    else:
        if connection.owner_id != owner.pk or connection.provider != provider:
            raise ValueError("the connection belongs to another owner or provider")
        if connection.status == Connection.Status.DISCONNECTED:
            raise serializers.ValidationError(
                {"connection": "This connection was disconnected; connect the mailbox again as a new one."})
        ask = _scopes_to_ask(provider, connection, wanted)
    state, verifier, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(64), secrets.token_urlsafe(24)
    # The attempt remembers the full set: the vault compares the grant with it, and stores it as the
    # connection's requested scopes only once the grant is accepted.
    attempt = OAuthAttempt(owner=owner, connection=connection, state_hash=_state_hash(state), requested_scopes=wanted)
    sealed = json.dumps({"code_verifier": verifier, "nonce": nonce, "redirect_uri": redirect_uri})
    attempt.sealed_verifier = seal_for_vault(SecretStr(sealed), owner_id=owner.pk, secret_id=attempt.id,
                                             purpose=PKCE_PURPOSE)
    attempt.save()
    url = URL_BUILDERS[provider](client_id=client_id, scope_names=ask, redirect_uri=redirect_uri, state=state,
                                 verifier=verifier, nonce=nonce, login_hint=connection.email)
    return connection, url


# --- the callback ----------------------------------------------------------------------------------

def _claim_attempt(user, provider: str, state: str):
    """The signed-in user's own unused, unexpired attempt for this state, now marked used; else None."""
    if not state or len(state) > 200:
        return None
    with transaction.atomic():
        attempt = (OAuthAttempt.objects.for_owner(user).select_for_update()
                   .filter(state_hash=_state_hash(state)).first())
        if attempt is None or attempt.used_at is not None or attempt.created_at + ATTEMPT_LIFETIME < timezone.now():
            return None
        connection = Connection.objects.for_owner(user).filter(pk=attempt.connection_id, provider=provider).first()
        if connection is None or connection.status == Connection.Status.DISCONNECTED:
            return None
        attempt.used_at = timezone.now()
        attempt.save(update_fields=["used_at"])
        return attempt, connection


def _record_provider_error(connection: Connection, error: str) -> None:
    name = PROVIDER_NAMES[connection.provider]
    if error == "access_denied":
        message = f"You declined access at {name}; connect again whenever you like."
    else:
        shown = error if _ERROR_CODE.match(error) else "unknown"
        message = f"{name} could not complete the sign-in ({shown}); please try again."
    fields = {"last_error": message, "updated_at": timezone.now()}
    if connection.status == Connection.Status.PENDING:
        fields["status"] = Connection.Status.ERROR  # a first sign-in; a re-authorisation changes no status
    elif connection.status == Connection.Status.ACTIVE and error == "access_denied":
        fields["last_error"] = "You declined the additional access; the connection keeps working as before."
    Connection.objects.for_owner(connection.owner_id).filter(pk=connection.pk).update(**fields)


def _queue_exchange(owner_id, connection_id, attempt_id, grant_secret_id) -> None:

    args = [str(owner_id), str(connection_id), str(attempt_id), str(grant_secret_id)]
    transaction.on_commit(lambda: oauth_exchange.delay(*args))


def _invalid(request, message: str = INVALID_CALLBACK):
    return render(request, "mail/oauth_error.html", {"message": message}, status=400)


@never_cache
@require_GET
@login_required
@sensitive_variables("code")
def oauth_callback(request, provider: str):
    """Where the provider sends the browser back: ?state=…&code=… or ?state=…&error=…"""
    claimed = _claim_attempt(request.user, provider, request.GET.get("state", ""))
    if claimed is None:
        return _invalid(request)
    attempt, connection = claimed
    error = request.GET.get("error")
    if error:
        _record_provider_error(connection, error)
        return redirect(f"/connections/{connection.pk}/")
    code = request.GET.get("code", "")
    if not code or len(code) > MAX_CODE_LENGTH:
        return _invalid(request, f"{PROVIDER_NAMES[provider]} sent no usable sign-in code. Start connecting again.")
    grant = secret_submit(owner=request.user, purpose=GRANT_PURPOSE, value=SecretStr(code), enqueue=False)
    del code
    _queue_exchange(request.user.pk, connection.pk, attempt.pk, grant.pk)
    return redirect(f"/connections/{connection.pk}/")
