"""Background work of the accounts app (queue `sync`)."""

from celery import shared_task

from aiemaily.ownership.tasks import owner_task


@shared_task(name="accounts.tasks.account_purge")
@owner_task
def account_purge(owner_id):
    """Delete the user's stored objects, then the user and (cascading under their own RLS binding)
    every owned row, storage keys included."""
    from accounts.models import User
    from mail import blobstore

    if not User.objects.filter(pk=owner_id, is_active=False).exists():
        return {"deleted_rows": 0, "deleted_objects": 0}
    objects = blobstore.delete_owner(owner_id)
    deleted, _ = User.objects.filter(pk=owner_id, is_active=False).delete()
    return {"deleted_rows": deleted, "deleted_objects": objects}
