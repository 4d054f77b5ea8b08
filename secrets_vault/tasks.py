"""Tasks of the `vault` queue. They take ids, return ids or sealed leases, and never plaintext.

KmsUnavailable is the one transient error: retried with backoff. Everything else (a ciphertext
that does not open, a wrong purpose) is final and audited, never retried.
"""

import logging

from celery import shared_task

from aiemaily.ownership.binding import owner_scope
from aiemaily.ownership.tasks import owner_task
from secrets_vault import vault_services
from secrets_vault.kms import KmsUnavailable
from secrets_vault.models import AuditEvent, Secret
from secrets_vault.oauth import grants
from secrets_vault.oauth.base import ProviderUnavailable
from secrets_vault.services import audit_record

logger = logging.getLogger(__name__)

RETRY = {"autoretry_for": (KmsUnavailable,), "retry_backoff": True, "retry_backoff_max": 300, "max_retries": 8}


def _gone(task, **ids) -> dict:
    """End a task whose object was deleted after it was queued (a mailbox disconnected while its
    sync waited): not an error, nothing to audit, and the rest of its chain does not run."""
    task.request.chain = None  # a canvas chain's remaining tasks
    task.request.callbacks = None  # link()ed ones
    logger.info("%s: %s is gone; nothing to do", task.name, ", ".join(f"{k}={v}" for k, v in ids.items()))
    return {**ids, "status": "gone"}


@shared_task(name="secrets_vault.tasks.secret_store", **RETRY)
@owner_task
def secret_store(owner_id, secret_id):
    secret = vault_services.secret_store_sealed(owner_id=owner_id, secret_id=secret_id)
    return {"secret_id": str(secret_id), "state": secret.state if secret else "deleted"}


@shared_task(name="secrets_vault.tasks.secret_lease", bind=True, **RETRY)
def secret_lease(self, owner_id, secret_id, connection_id, purpose):
    """Issue a lease; chain the sync task after it: it receives the lease as its first argument."""
    with vault_services.audited_refusals(owner_id), owner_scope(owner_id):
        try:
            return vault_services.secret_lease(owner_id=owner_id, secret_id=secret_id, connection_id=connection_id,
                                         purpose=purpose).as_message()
        except Secret.DoesNotExist:
            return _gone(self, connection_id=str(connection_id), secret_id=str(secret_id))


@shared_task(name="secrets_vault.tasks.ai_key_lease", **RETRY)
def ai_key_lease(owner_id, ai_key_id, secret_id):
    """Lease a BYOK AI key to the ai pool, bound to that key's id; chain the ai task after it."""
    with vault_services.audited_refusals(owner_id), owner_scope(owner_id):
        vault_services.secret_store_sealed(owner_id=owner_id, secret_id=secret_id)  # a key added moments ago
        return vault_services.secret_lease(owner_id=owner_id, secret_id=secret_id, connection_id=ai_key_id,
                                     purpose="ai_key", recipient="ai").as_message()


@shared_task(name="secrets_vault.tasks.owner_rotate_dek", **RETRY)
def owner_rotate_dek(owner_id):
    with vault_services.audited_refusals(owner_id), owner_scope(owner_id):
        return {"reencrypted": vault_services.secret_reencrypt_owner(owner_id=owner_id)}


@shared_task(name="secrets_vault.tasks.owner_shred", **RETRY)
@owner_task
def owner_shred(owner_id):
    return {"destroyed": vault_services.owner_shred(owner_id=owner_id)}


@shared_task(name="secrets_vault.tasks.leases_issue", bind=True, **RETRY)
def leases_issue(self, owner_id, connection_id, secret_ids: dict):
    """Store any still-pending secrets, then lease each to the sync pool: {purpose: lease}.

    Chain the sync task after this one; it receives the dict as its first argument. A secret
    deleted meanwhile (its connection was disconnected) ends the chain quietly as "gone".
    """
    with vault_services.audited_refusals(owner_id), owner_scope(owner_id):
        leases = {}
        for purpose, secret_id in secret_ids.items():
            try:
                vault_services.secret_store_sealed(owner_id=owner_id, secret_id=secret_id)
                leases[purpose] = vault_services.secret_lease(owner_id=owner_id, secret_id=secret_id,
                                                        connection_id=connection_id, purpose=purpose).as_message()
            except Secret.DoesNotExist:
                return _gone(self, connection_id=str(connection_id), secret_id=str(secret_id))
        return leases


# --- OAuth (secrets_vault/oauth/grants.py): the only tasks that talk to providers' token endpoints --
# A provider that does not answer (ProviderUnavailable) is retried with backoff; when retries run
# out the outcome is recorded for the user. Terminal answers (invalid_grant, revoked consent, a
# broader grant) are recorded by the service and never retried.

OAUTH_RETRY = {**RETRY, "bind": True}


def _backoff(task) -> int:
    return min(300, 5 * 2 ** task.request.retries)


def _out_of_retries(task) -> bool:
    return task.request.called_directly or task.request.retries >= task.max_retries


@shared_task(name="secrets_vault.tasks.oauth_exchange", **OAUTH_RETRY)
def oauth_exchange(self, owner_id, connection_id, attempt_id, grant_secret_id):
    """Redeem the authorization code web sealed from the callback; the connection ends active or says why."""
    with vault_services.audited_refusals(owner_id):
        try:
            return grants.exchange(owner_id=owner_id, connection_id=connection_id, attempt_id=attempt_id,
                                        grant_secret_id=grant_secret_id)
        except ProviderUnavailable as exc:
            if not _out_of_retries(self):
                raise self.retry(exc=exc, countdown=_backoff(self)) from None
            grants.exchange_failed(owner_id=owner_id, connection_id=connection_id,
                                        grant_secret_id=grant_secret_id)
            return {"connection_id": str(connection_id), "status": "error", "code": exc.code}


@shared_task(name="secrets_vault.tasks.oauth_access_lease", **OAUTH_RETRY)
def oauth_access_lease(self, owner_id, connection_id, purpose):
    """Issue a lease of a fresh access token; chain the sync task after it (it receives the lease)."""
    with vault_services.audited_refusals(owner_id):
        try:
            return grants.access_lease(owner_id=owner_id, connection_id=connection_id,
                                            purpose=purpose).as_message()
        except ProviderUnavailable as exc:
            if _out_of_retries(self):
                raise
            raise self.retry(exc=exc, countdown=_backoff(self)) from None


@shared_task(name="secrets_vault.tasks.oauth_close_lease")
def oauth_close_lease(owner_id, connection_id, provider, secret_id, scopes):
    """Disconnect: a lease to stop the mailbox's push channel, before oauth_revoke runs ({} if none)."""
    with vault_services.audited_refusals(owner_id):
        return grants.closing_lease(owner_id=owner_id, connection_id=connection_id, provider=provider,
                                         secret_id=secret_id, scopes=scopes)


@shared_task(name="secrets_vault.tasks.oauth_revoke", **OAUTH_RETRY)
def oauth_revoke(self, owner_id, connection_id, provider, secret_id):
    """Disconnect: revoke the refresh token at the provider and destroy it (unrevoked, as a last resort)."""
    with vault_services.audited_refusals(owner_id):
        try:
            return grants.revoke(owner_id=owner_id, connection_id=connection_id, provider=provider,
                                      secret_id=secret_id)
        except ProviderUnavailable as exc:
            if not _out_of_retries(self):
                raise self.retry(exc=exc, countdown=_backoff(self)) from None
            return grants.revoke(owner_id=owner_id, connection_id=connection_id, provider=provider,
                                      secret_id=secret_id, give_up=True)


@shared_task(name="secrets_vault.tasks.oauth_revoke_for_deletion", **OAUTH_RETRY)
def oauth_revoke_for_deletion(self, owner_id, connection_id, provider, secret_id):
    """Account deletion's revocation step. Like oauth_revoke, except that no failure stops the
    deletion chain: a refusal, a KMS that stays unavailable, a provider that never answers or an
    unforeseen error is recorded (audit trail and log) and the task returns, so shredding and
    purging run next whatever happens here. A grant left at the provider is the lesser harm;
    keys kept alive because a revocation failed would break the deletion promise."""
    ids = {"owner_id": owner_id, "connection_id": connection_id, "provider": provider, "secret_id": secret_id}
    try:
        with vault_services.audited_refusals(owner_id):
            return grants.revoke(owner_id=owner_id, connection_id=connection_id, provider=provider,
                                      secret_id=secret_id)
    except ProviderUnavailable as exc:
        if not _out_of_retries(self):
            raise self.retry(exc=exc, countdown=_backoff(self)) from None
        try:  # destroyed unrevoked (audited by revoke); needs no key, so this can still succeed
            grants.revoke(owner_id=owner_id, connection_id=connection_id, provider=provider,
                               secret_id=secret_id, give_up=True)
        except Exception as again:  # noqa: BLE001 - see the docstring: deletion goes on
            return _revocation_failed(ids, f"provider unreachable, then {type(again).__name__}", audit=True)
        return _revocation_failed(ids, "the provider stayed unreachable", audit=False)
    except KmsUnavailable as exc:
        if not _out_of_retries(self):
            raise self.retry(exc=exc, countdown=_backoff(self)) from None
        return _revocation_failed(ids, "the KMS stayed unavailable", audit=True)
    except vault_services.VaultRefusal as refusal:  # already in the audit trail (audited_refusals)
        return _revocation_failed(ids, f"the vault refused: {refusal.reason}", audit=False)
    except Exception as exc:  # noqa: BLE001 - see the docstring: deletion goes on
        return _revocation_failed(ids, f"unexpected {type(exc).__name__}", audit=True)


def _revocation_failed(ids: dict, reason: str, *, audit: bool) -> dict:
    """Record a revocation that did not happen during account deletion. The log line outlives the
    account (its audit trail is purged with it); neither holds a token or an error's text."""
    if audit:
        with owner_scope(ids["owner_id"]):
            audit_record(owner_id=ids["owner_id"], action=AuditEvent.Action.REFUSED, process="vault",
                                  purpose="oauth_refresh_token", subject=ids["connection_id"],
                                  detail=f"not revoked at the provider during account deletion: {reason}")
    logger.warning("account deletion: %s grant of connection %s not revoked (%s); shredding goes on",
                   ids["provider"], ids["connection_id"], reason,
                   extra={"event": "account_delete_revoke_failed", "owner_id": ids["owner_id"]})
    return {"connection_id": str(ids["connection_id"]), "status": "revocation_failed", "reason": reason}
