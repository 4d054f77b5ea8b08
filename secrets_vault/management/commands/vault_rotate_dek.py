"""Rotate users' data keys: a new DEK version, every secret re-encrypted, the old DEK destroyed.

    manage.py vault_rotate_dek --owner <user id>     one user
    manage.py vault_rotate_dek --all                 every user with a data key (resumable)
"""

from django.core.management.base import BaseCommand, CommandError

from aiemaily.ownership.binding import owner_scope
from secrets_vault import keystore, vault_services
from secrets_vault.models import DataKey


class Command(BaseCommand):
    help = "Re-encrypt users' secrets under a fresh data key and destroy the old one."

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--owner")
        group.add_argument("--all", action="store_true")

    def handle(self, *args, owner=None, all=False, **options):
        try:
            keystore.require_vault()
        except keystore.VaultNotHere as exc:
            raise CommandError(f"{exc} (run with AIEMAILY_PROCESS=vault and its keys)") from None
        owners = [owner] if owner else list(DataKey.objects.values_list("owner_id", flat=True).distinct())
        for number, owner_id in enumerate(owners, 1):

            with vault_services.audited_refusals(owner_id), owner_scope(owner_id):
                moved = vault_services.secret_reencrypt_owner(owner_id=owner_id)
            self.stdout.write(f"[{number}/{len(owners)}] {owner_id}: {moved} secrets re-encrypted")
