"""Background work of the accounts app (queue `sync`)."""

from celery import shared_task

from aiemaily.ownership.tasks import owner_task


@shared_task(name="accounts.tasks.account_purge")
@owner_task
def account_purge(owner_id):
    """Delete the user and, through cascades under their own RLS binding, every owned row."""
    from accounts.models import User

    deleted, _ = User.objects.filter(pk=owner_id, is_active=False).delete()
    return {"deleted_rows": deleted}
