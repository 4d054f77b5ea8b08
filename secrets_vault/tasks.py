"""Tasks of the `vault` queue. They take ids, return ids or sealed leases, and never plaintext.

KmsUnavailable is the one transient error: retried with backoff. Everything else (a ciphertext
that does not open, a wrong purpose) is final and audited, never retried.
"""

from celery import shared_task

from aiemaily.ownership.binding import owner_scope
from aiemaily.ownership.tasks import owner_task
from secrets_vault import services
from secrets_vault.kms import KmsUnavailable

RETRY = {"autoretry_for": (KmsUnavailable,), "retry_backoff": True, "retry_backoff_max": 300, "max_retries": 8}


@shared_task(name="secrets_vault.tasks.secret_store", **RETRY)
@owner_task
def secret_store(owner_id, secret_id):
    secret = services.secret_store_sealed(owner_id=owner_id, secret_id=secret_id)
    return {"secret_id": str(secret_id), "state": secret.state if secret else "deleted"}


@shared_task(name="secrets_vault.tasks.secret_lease", **RETRY)
def secret_lease(owner_id, secret_id, connection_id, purpose):
    """Issue a lease; chain the sync task after it: it receives the lease as its first argument."""
    with services.audited_refusals(owner_id), owner_scope(owner_id):
        return services.secret_lease(owner_id=owner_id, secret_id=secret_id, connection_id=connection_id,
                                     purpose=purpose).as_message()


@shared_task(name="secrets_vault.tasks.owner_rotate_dek", **RETRY)
def owner_rotate_dek(owner_id):
    with services.audited_refusals(owner_id), owner_scope(owner_id):
        return {"reencrypted": services.secret_reencrypt_owner(owner_id=owner_id)}


@shared_task(name="secrets_vault.tasks.owner_shred", **RETRY)
@owner_task
def owner_shred(owner_id):
    return {"destroyed": services.owner_shred(owner_id=owner_id)}


@shared_task(name="secrets_vault.tasks.leases_issue", **RETRY)
def leases_issue(owner_id, connection_id, secret_ids: dict):
    """Store any still-pending secrets, then lease each to the sync pool: {purpose: lease}.

    Chain the sync task after this one; it receives the dict as its first argument.
    """
    with services.audited_refusals(owner_id), owner_scope(owner_id):
        leases = {}
        for purpose, secret_id in secret_ids.items():
            services.secret_store_sealed(owner_id=owner_id, secret_id=secret_id)
            leases[purpose] = services.secret_lease(owner_id=owner_id, secret_id=secret_id,
                                                    connection_id=connection_id, purpose=purpose).as_message()
        return leases


# --- OAuth (mail/providers/oauth_vault.py): the only tasks that talk to providers' token endpoints --
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
    # Imported when run: the vault app does not depend on the mail app at import time.
    from mail.providers import oauth_vault
    from mail.providers.oauth_base import ProviderUnavailable

    with services.audited_refusals(owner_id):
        try:
            return oauth_vault.exchange(owner_id=owner_id, connection_id=connection_id, attempt_id=attempt_id,
                                        grant_secret_id=grant_secret_id)
        except ProviderUnavailable as exc:
            if not _out_of_retries(self):
                raise self.retry(exc=exc, countdown=_backoff(self)) from None
            oauth_vault.exchange_failed(owner_id=owner_id, connection_id=connection_id,
                                        grant_secret_id=grant_secret_id)
            return {"connection_id": str(connection_id), "status": "error", "code": exc.code}


@shared_task(name="secrets_vault.tasks.oauth_access_lease", **OAUTH_RETRY)
def oauth_access_lease(self, owner_id, connection_id, purpose):
    """Issue a lease of a fresh access token; chain the sync task after it (it receives the lease)."""
    from mail.providers import oauth_vault
    from mail.providers.oauth_base import ProviderUnavailable

    with services.audited_refusals(owner_id):
        try:
            return oauth_vault.access_lease(owner_id=owner_id, connection_id=connection_id,
                                            purpose=purpose).as_message()
        except ProviderUnavailable as exc:
            if _out_of_retries(self):
                raise
            raise self.retry(exc=exc, countdown=_backoff(self)) from None


@shared_task(name="secrets_vault.tasks.oauth_revoke", **OAUTH_RETRY)
def oauth_revoke(self, owner_id, connection_id, provider, secret_id):
    """Disconnect: revoke the refresh token at the provider and destroy it (unrevoked, as a last resort)."""
    from mail.providers import oauth_vault
    from mail.providers.oauth_base import ProviderUnavailable

    with services.audited_refusals(owner_id):
        try:
            return oauth_vault.revoke(owner_id=owner_id, connection_id=connection_id, provider=provider,
                                      secret_id=secret_id)
        except ProviderUnavailable as exc:
            if not _out_of_retries(self):
                raise self.retry(exc=exc, countdown=_backoff(self)) from None
            return oauth_vault.revoke(owner_id=owner_id, connection_id=connection_id, provider=provider,
                                      secret_id=secret_id, give_up=True)
