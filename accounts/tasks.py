"""Background work of the accounts app (queue `sync`)."""

from celery import shared_task

from accounts.models import User
from aiemaily.ownership.tasks import owner_task
from mail import blobstore


@shared_task(name="accounts.tasks.account_purge")
@owner_task
def account_purge(owner_id):
    """Destroy the user's storage keys (crypto-shredding of bodies and metadata: they live in the
    key store, not in the main database), then delete their stored objects, then the user and
    (cascading under their own RLS binding) every owned row. Safe to run again."""
    if not User.objects.filter(pk=owner_id, is_active=False).exists():
        return {"deleted_rows": 0, "deleted_objects": 0, "destroyed_storage_keys": 0}
    keys = blobstore.storage_keys_shred(owner_id)
    objects = blobstore.delete_owner(owner_id)
    deleted, _ = User.objects.filter(pk=owner_id, is_active=False).delete()
    return {"deleted_rows": deleted, "deleted_objects": objects, "destroyed_storage_keys": keys}
