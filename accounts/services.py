"""Writes of the accounts app."""

import logging

from celery import chain
from django.db import transaction

from accounts.api.serializers import revoke_all_refresh_tokens
from accounts.models import User

logger = logging.getLogger(__name__)


def account_delete(*, user: User) -> None:
    """Close the account now; revoke provider grants, destroy its keys, then its data, in the background.

    Order matters (crypto-shredding): worker-vault revokes OAuth grants at the providers (it needs the
    DEKs to read the refresh tokens), then destroys the user's DEKs, so every
    ciphertext that might survive somewhere (a backup, a replica) is noise; only then are the rows
    and stored objects deleted. Sign-in stops at once.
    """
    from accounts.tasks import account_purge
    from mail.models import Connection
    from secrets_vault.tasks import oauth_revoke, owner_shred

    user.is_active = False
    user.save(update_fields=["is_active"])
    revoke_all_refresh_tokens(user.pk)
    owner_id = str(user.pk)
    # Grants at Google/Microsoft are revoked while the vault can still open the refresh tokens.
    revocations = [
        oauth_revoke.si(owner_id, str(c.pk), c.provider, str(c.oauth_secret_id))
        for c in Connection.objects.for_owner(user).filter(oauth_secret__isnull=False)
    ]
    steps = [*revocations, owner_shred.si(owner_id), account_purge.si(owner_id)]
    transaction.on_commit(lambda: chain(*steps).apply_async())
    logger.info("account %s closed; shredding queued", owner_id, extra={"event": "account_delete"})
