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
