"""Move storage keys that releases before the key store kept in the main database into the key
store (`keys` database), deleting them from the main database. Run once after upgrading:

    AIEMAILY_PROCESS=sync manage.py storage_keys_move

Resumable and idempotent: an owner's rows are copied, committed in the key store, then deleted from
the main database; a run after an interruption moves what is left. Until it runs, each user's key
also moves on first use. Needs the maintenance database role (to list every owner's rows).
"""

from django.core.management.base import BaseCommand

from mail import storage_rotation
from mail.management.commands._storage import require_storage_zone


class Command(BaseCommand):
    help = "Move storage keys from the main database into the key store."

    def handle(self, *args, **options):
        require_storage_zone()

        def progress(number, total, owner_id, count):
            self.stdout.write(f"[{number}/{total}] {owner_id}: {count} storage keys moved")

        moved = storage_rotation.legacy_move_all(progress=progress)
        if moved:
            self.stdout.write(self.style.SUCCESS(f"done: {moved} storage keys moved; the main database holds none"))
        else:
            self.stdout.write("nothing to move: the main database holds no storage key")
