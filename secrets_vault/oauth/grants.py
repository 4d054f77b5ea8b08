"""OAuth in worker-vault, for both providers: redeem a sealed code, lease access tokens, revoke.

The mailbox a grant serves is read and updated through `holder` (registered by the mail app).

The one place where OAuth tokens exist in plaintext, briefly, in memory. Each function runs its own
owner-bound transactions and locks the connection row for the whole exchange or refresh, so two
vault workers never use (or rotate) the same refresh token at once. Outcomes the user must act on
(declined, expired, too much access granted) are written to the connection before any refusal is
raised, in a transaction that commits.
"""

import json
import logging

from django.conf import settings
from django.utils import timezone

from aiemaily.ownership.binding import owner_scope
from secrets_vault import vault_services
from secrets_vault.models import AuditEvent, Secret
from secrets_vault.oauth import google as google_oauth
from secrets_vault.oauth import holder
from secrets_vault.oauth import microsoft as microsoft_oauth
from secrets_vault.oauth import scopes as scope_table
from secrets_vault.oauth.base import (
    ACCESS_PURPOSE,
    GRANT_PURPOSE,
    PKCE_PURPOSE,
    PROVIDER_NAMES,
    REFRESH_PURPOSE,
    GrantRevoked,
    OAuthError,
    ProviderRejected,
    Tokens,
)
from secrets_vault.oauth.holder import Status
from secrets_vault.sealing import Lease, lease_seal
from secrets_vault.services import audit_record
from secrets_vault.vault_services import VaultRefusal

logger = logging.getLogger(__name__)

PROVIDERS = {"gmail": google_oauth, "microsoft": microsoft_oauth}
LEASE_MARGIN_SECONDS = 60  # a lease ends before the access token inside it does


# --- shared pieces ---------------------------------------------------------------------------------

def _locked_connection(owner_id, connection_id):
    return holder.get().lock(owner_id, connection_id)


def _save(connection, **fields) -> None:
    holder.get().save(connection, **fields)


def _tell(connection, status: str, message: str) -> None:
    """Record a failed sign-in. Only a connection's first one decides its status; a failed
    re-authorisation or upgrade leaves a working (or needs-reauth) connection as it was."""
    if connection.status == Status.PENDING:
        _save(connection, status=status, last_error=message)
    else:
        _save(connection, last_error=message)


def _flow_secrets(owner_id, attempt) -> dict:
    """The PKCE verifier, nonce and redirect URI web sealed to us when the attempt began."""
    opened = vault_services.sealed_open(owner_id=owner_id, subject_id=attempt.id, purpose=PKCE_PURPOSE,
                                  sealed=attempt.sealed_verifier)
    try:
        flow = json.loads(opened.reveal())
    except ValueError:
        raise VaultRefusal("sealed PKCE data is malformed", purpose=PKCE_PURPOSE, subject=attempt.id) from None
    if not all(isinstance(flow.get(k), str) for k in ("code_verifier", "nonce", "redirect_uri")):
        raise VaultRefusal("sealed PKCE data is incomplete", purpose=PKCE_PURPOSE, subject=attempt.id)
    return flow


def _refuse(owner_id, *, subject, detail: str) -> None:
    audit_record(owner_id=owner_id, action=AuditEvent.Action.REFUSED, process="vault",
                          purpose="oauth_scopes", subject=subject, detail=detail)


def _revoke_quietly(provider, token) -> str:
    """Revoke what we will not keep; report what happened in words for the audit trail."""
    if token is None:
        return "nothing to revoke"
    try:
        return "revoked at the provider" if provider.revoke(token=token) else "the provider cannot revoke it"
    except OAuthError as exc:
        logger.warning("revocation failed (%s); the token is dropped unrevoked", exc.code)
        return f"revocation failed ({exc.code}); dropped"


# --- code exchange ---------------------------------------------------------------------------------

def exchange(*, owner_id, connection_id, attempt_id, grant_secret_id) -> dict:
    """Redeem the sealed code of a finished consent trip; the connection ends active, or says why not.

    ProviderUnavailable propagates with everything rolled back (the code stays sealed), so the
    task can retry; `exchange_failed` records the outcome when retries run out.
    """
    try:
        with owner_scope(owner_id):
            return _exchange_locked(owner_id, connection_id, attempt_id, grant_secret_id)
    except VaultRefusal:
        exchange_failed(owner_id=owner_id, connection_id=connection_id, grant_secret_id=grant_secret_id,
                        message="The sign-in could not be completed; please connect again.")
        raise


def exchange_failed(*, owner_id, connection_id, grant_secret_id, message: str = "") -> None:
    """Give up on a code (retries ran out, or the vault refused it): destroy it and tell the user."""
    with owner_scope(owner_id):
        connection = _locked_connection(owner_id, connection_id)
        vault_services.secret_destroy(owner_id=owner_id, secret_id=grant_secret_id, detail="sign-in abandoned")
        if connection is not None:
            name = PROVIDER_NAMES.get(connection.provider, "The provider")
            _tell(connection, Status.ERROR,
                  message or f"{name} could not be reached to finish connecting; please try again.")


def _exchange_locked(owner_id, connection_id, attempt_id, grant_secret_id) -> dict:
    connection = _locked_connection(owner_id, connection_id)
    # Read after the lock: a redelivered task finds the code already spent and does nothing.
    grant = Secret.objects.for_owner(owner_id).filter(pk=grant_secret_id, purpose=GRANT_PURPOSE).first()
    if grant is None:
        return {"connection_id": str(connection_id), "status": "already_done"}
    if connection is None or connection.status == Status.DISCONNECTED:
        vault_services.secret_destroy(owner_id=owner_id, secret_id=grant.pk, detail="connection gone before use")
        return {"connection_id": str(connection_id), "status": "gone"}
    attempt = holder.get().finished_attempt(owner_id, attempt_id=attempt_id, connection_id=connection.pk)
    if attempt is None or attempt.used_at is None:
        raise VaultRefusal("no finished sign-in attempt for this code", purpose=GRANT_PURPOSE, subject=grant.pk)
    code = vault_services.secret_open_sealed(owner_id=owner_id, secret_id=grant.pk, purpose=GRANT_PURPOSE)
    flow = _flow_secrets(owner_id, attempt)
    provider = PROVIDERS[connection.provider]
    try:
        tokens = provider.exchange_code(code=code, code_verifier=flow["code_verifier"], nonce=flow["nonce"],
                                        redirect_uri=flow["redirect_uri"], scopes=attempt.requested_scopes)
    except (GrantRevoked, ProviderRejected) as exc:
        # Terminal: the code is spent or refused either way. No retry; the user is told what to do.
        vault_services.secret_destroy(owner_id=owner_id, secret_id=grant.pk, detail=f"exchange refused ({exc.code})")
        status = Status.NEEDS_REAUTH if isinstance(exc, GrantRevoked) else Status.ERROR
        _tell(connection, status, exc.message)
        return {"connection_id": str(connection.pk), "status": status, "code": exc.code}
    finally:
        del code
        # The verifier is worthless once its code is spent; no sealed copy needs to stay around.
        holder.get().attempt_spent(owner_id, attempt_id=attempt.pk)
    vault_services.secret_destroy(owner_id=owner_id, secret_id=grant.pk, detail="authorization code redeemed")
    return _accept(owner_id, connection, attempt, tokens, provider)


def _accept(owner_id, connection, attempt, tokens: Tokens, provider) -> dict:
    """Keep the tokens only if the grant is what we asked for (or less), for the expected account."""
    name = PROVIDER_NAMES[connection.provider]
    granted = list(tokens.scopes) if tokens.scopes is not None else list(attempt.requested_scopes)
    broader, missing = scope_table.compare(connection.provider, attempt.requested_scopes, granted)
    if broader:
        return _refuse_broader(owner_id, connection, tokens, provider, sorted(broader))
    problem = _identity_problem(connection, tokens, granted)
    if problem:
        outcome = _revoke_quietly(provider, tokens.refresh_token or tokens.access_token)
        _refuse(owner_id, subject=connection.pk, detail=f"{problem[:120]}; {outcome}")
        _tell(connection, Status.ERROR, problem)
        return {"connection_id": str(connection.pk), "status": "refused", "reason": problem}
    detail = f"{name} refresh token; granted {len(granted)} scopes" + (f", {len(missing)} fewer than asked"
                                                                        if missing else "")
    secret = vault_services.secret_put(owner_id=owner_id, purpose=REFRESH_PURPOSE, value=tokens.refresh_token,
                                 secret_id=connection.oauth_secret_id, detail=detail)
    _save(connection, oauth_secret=secret, email=tokens.email or connection.email,
          requested_scopes=list(attempt.requested_scopes), granted_scopes=granted,
          status=Status.ACTIVE, last_error="", verified_at=timezone.now())
    _queue_first_sync(owner_id, connection, granted)
    return {"connection_id": str(connection.pk), "status": "active", "missing": sorted(missing)}


def _queue_first_sync(owner_id, connection, granted) -> None:
    """A newly active connection that may read mail starts syncing at once (ids only, on commit)."""
    if "read" in scope_table.capabilities_granted(connection.provider, granted):
        holder.get().activated(owner_id, connection_id=connection.pk)


def _refuse_broader(owner_id, connection, tokens, provider, broader: list[str]) -> dict:
    """More access than asked for is refused outright: revoked where possible, never stored."""
    name = PROVIDER_NAMES[connection.provider]
    outcome = _revoke_quietly(provider, tokens.refresh_token or tokens.access_token)
    _refuse(owner_id, subject=connection.pk, detail=f"granted beyond request: {' '.join(broader)}"[:200]
            + f"; {outcome}")
    message = f"{name} granted more access than we asked for; we refused it."
    if connection.provider == "microsoft":
        message += f" {microsoft_oauth.WITHDRAW_HINT}"
    if connection.oauth_secret_id is not None:
        # Google revokes the whole grant with any of its tokens, so the old refresh token died too;
        # for Microsoft, a connection whose consent we refused must not live on either.
        vault_services.secret_destroy(owner_id=owner_id, secret_id=connection.oauth_secret_id,
                                detail="connection refused: broader grant")
    _save(connection, status=Status.ERROR, last_error=message[:300], granted_scopes=[],
          oauth_secret=None)
    return {"connection_id": str(connection.pk), "status": "refused", "broader": broader}


def _identity_problem(connection, tokens: Tokens, granted) -> str:
    name = PROVIDER_NAMES[connection.provider]
    if not scope_table.capabilities_granted(connection.provider, granted):
        return f"You did not allow Aiemaily to use your mail at {name}, so this connection cannot work."
    if tokens.refresh_token is None:
        return f"{name} did not give Aiemaily lasting access; please connect again."
    if not tokens.email:
        return f"{name} did not tell us which mailbox you signed in to; please connect again."
    if connection.email and tokens.email.lower() != connection.email.lower():
        return (f"You signed in as {tokens.email[:80]}, but this connection is for {connection.email[:80]}; "
                "nothing was changed.")
    return ""


# --- access tokens for the sync pool ---------------------------------------------------------------

def access_lease(*, owner_id, connection_id, purpose: str) -> Lease:
    """A fresh access token sealed to the sync pool, refreshed under the connection's row lock.

    The refresh token is re-read after the lock is held: a refresh that finished while we waited
    may have rotated it, and the old one may already be dead. A rotated token is stored before the
    lock is released, so no refresh ever starts from a stale token.
    """
    if purpose != ACCESS_PURPOSE:
        raise VaultRefusal("OAuth leases are only for access tokens", purpose=purpose, subject=connection_id)
    with owner_scope(owner_id):
        outcome = _refresh_locked(owner_id, connection_id)
    if isinstance(outcome, str):
        raise VaultRefusal(outcome, purpose=ACCESS_PURPOSE, subject=connection_id)  # after the commit
    return outcome


def _refresh_locked(owner_id, connection_id) -> Lease | str:
    connection = _locked_connection(owner_id, connection_id)
    if connection is None or connection.provider not in PROVIDERS:
        return "no such OAuth connection"
    if connection.status != Status.ACTIVE or connection.oauth_secret_id is None:
        return f"connection is {connection.status}, not active"
    refresh_token = vault_services.secret_reveal(owner_id=owner_id, secret_id=connection.oauth_secret_id,
                                           purpose=REFRESH_PURPOSE)
    try:
        tokens = PROVIDERS[connection.provider].refresh(refresh_token=refresh_token, scopes=connection.granted_scopes)
    except GrantRevoked as exc:
        vault_services.secret_destroy(owner_id=owner_id, secret_id=connection.oauth_secret_id,
                                detail=f"refused by the provider ({exc.code})")
        _save(connection, status=Status.NEEDS_REAUTH, last_error=exc.message, oauth_secret=None)
        return f"refresh refused by the provider ({exc.code}); needs sign-in"
    except ProviderRejected as exc:
        _save(connection, status=Status.ERROR, last_error=exc.message)
        return f"refresh rejected by the provider ({exc.code})"
    finally:
        del refresh_token
    if tokens.refresh_token is not None:
        vault_services.secret_put(owner_id=owner_id, purpose=REFRESH_PURPOSE, value=tokens.refresh_token,
                            secret_id=connection.oauth_secret_id, detail="rotated by the provider")
    ttl = max(1, min(settings.AIEMAILY_LEASE_SECONDS, tokens.expires_in - LEASE_MARGIN_SECONDS))
    lease = lease_seal(tokens.access_token.reveal().encode(), owner_id=owner_id, connection_id=connection.pk,
                       purpose=ACCESS_PURPOSE, ttl_seconds=ttl)
    audit_record(owner_id=owner_id, action=AuditEvent.Action.LEASE, process="vault",
                          purpose=ACCESS_PURPOSE, subject=connection.pk,
                          detail=f"lease {lease.lease_id} until {lease.expires_at}")
    return lease


# --- disconnect: one last access token, to stop the push channel ----------------------------------

def closing_lease(*, owner_id, connection_id, provider: str, secret_id, scopes) -> dict:
    """A lease for stopping a disconnected mailbox's push channel (Gmail users.stop, Graph DELETE
    subscription), issued just before the grant is revoked (the chain runs oauth_revoke next).

    Works from the refresh secret alone: the connection row may already be deleted with its mail.
    Never raises: any failure gives {} (no lease), so the revocation after it still runs.
    """
    if provider not in PROVIDERS:
        return {}
    with owner_scope(owner_id):
        secret = Secret.objects.for_owner(owner_id).filter(pk=secret_id, purpose=REFRESH_PURPOSE).first()
        if secret is None:
            return {}
        refresh_token = vault_services.secret_reveal(owner_id=owner_id, secret_id=secret.pk, purpose=REFRESH_PURPOSE)
        try:
            tokens = PROVIDERS[provider].refresh(refresh_token=refresh_token, scopes=scopes)
        except OAuthError as exc:
            logger.warning("no access token to stop the push channel of %s: %s", connection_id,
                           getattr(exc, "code", type(exc).__name__))
            return {}
        finally:
            del refresh_token
        if tokens.refresh_token is not None:  # Microsoft rotates: the revocation needs the newest
            vault_services.secret_put(owner_id=owner_id, purpose=REFRESH_PURPOSE, value=tokens.refresh_token,
                                secret_id=secret.pk, detail="rotated by the provider")
        ttl = max(1, min(settings.AIEMAILY_LEASE_SECONDS, tokens.expires_in - LEASE_MARGIN_SECONDS))
        lease = lease_seal(tokens.access_token.reveal().encode(), owner_id=owner_id, connection_id=connection_id,
                           purpose=ACCESS_PURPOSE, ttl_seconds=ttl)
        audit_record(owner_id=owner_id, action=AuditEvent.Action.LEASE, process="vault",
                              purpose=ACCESS_PURPOSE, subject=connection_id,
                              detail=f"lease {lease.lease_id} to stop push notifications before revocation")
        return lease.as_message()


# --- revocation ------------------------------------------------------------------------------------

def revoke(*, owner_id, connection_id, provider: str, secret_id, give_up: bool = False) -> dict:
    """Disconnect: revoke the refresh token at the provider, then destroy it.

    With `give_up` (retries exhausted) the token is destroyed unrevoked, and the audit trail says so.
    The connection row (if the user kept it) is locked first, in the same order as a refresh takes
    its locks, so a refresh running at the same moment finishes before the token goes.
    """
    with owner_scope(owner_id):
        _locked_connection(owner_id, connection_id)
        secret = Secret.objects.for_owner(owner_id).filter(pk=secret_id, purpose=REFRESH_PURPOSE).first()
        if secret is None:
            return {"secret_id": str(secret_id), "status": "gone"}
        name, revoked = PROVIDER_NAMES[provider], False
        if give_up:
            detail = f"{name} could not be reached to revoke; destroyed unrevoked"
        else:
            token = vault_services.secret_reveal(owner_id=owner_id, secret_id=secret.pk, purpose=REFRESH_PURPOSE)
            try:
                revoked = PROVIDERS[provider].revoke(token=token)
            except ProviderRejected as exc:
                detail = f"{name} refused to revoke ({exc.code}); destroyed"
            else:
                detail = (f"revoked at {name}; destroyed" if revoked
                          else f"{name} has no revocation endpoint; destroyed")
            finally:
                del token
        vault_services.secret_destroy(owner_id=owner_id, secret_id=secret.pk, detail=detail)
        return {"secret_id": str(secret_id), "status": "destroyed", "revoked": revoked}
