"""Writes of the accounts app."""

import logging

from celery import chain
from django.db import transaction

from accounts.api.serializers import revoke_all_refresh_tokens
from accounts.models import User

logger = logging.getLogger(__name__)


def account_delete(*, user: User) -> None:
    """Close the account now; destroy its keys, then its data, in the background.

    Order matters (crypto-shredding): worker-vault destroys the user's DEKs first, so every
    ciphertext that might survive somewhere (a backup, a replica) is noise; only then are the rows
    and stored objects deleted. Sign-in stops at once.
    """
    from accounts.tasks import account_purge
    from secrets_vault.tasks import owner_shred

    user.is_active = False
    user.save(update_fields=["is_active"])
    revoke_all_refresh_tokens(user.pk)
    owner_id = str(user.pk)
    transaction.on_commit(lambda: chain(owner_shred.si(owner_id), account_purge.si(owner_id)).apply_async())
    logger.info("account %s closed; shredding queued", owner_id, extra={"event": "account_delete"})
