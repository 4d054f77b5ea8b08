"""Rotate users' storage keys: a new version, every object key and sealed column re-wrapped under
it (bodies are not re-encrypted: each keeps its own object key), the old version destroyed.

    manage.py storage_keys_rotate --owner <user id>     one user
    manage.py storage_keys_rotate --all                 every user with a storage key
    add --resume to finish an interrupted run without starting yet another version

Run with a mail zone's configuration (AIEMAILY_PROCESS=sync). An old version is destroyed only once
nothing uses it and the new one has been active longer than AIEMAILY_STORAGE_KEY_CACHE_SECONDS (a
process may still write under a cached old key until then): run again with --resume after that.
"""

from django.core.management.base import BaseCommand

from mail import storage_rotation
from mail.management.commands._storage import require_storage_zone


class Command(BaseCommand):
    help = "Re-wrap users' objects under a fresh storage key and destroy the old one."

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--owner")
        group.add_argument("--all", action="store_true")
        parser.add_argument("--resume", action="store_true", help="no new version; finish what is left")

    def handle(self, *args, owner=None, all=False, resume=False, **options):
        require_storage_zone()
        owners = [owner] if owner else storage_rotation.owners()
        waiting = failed = 0
        for number, owner_id in enumerate(owners, 1):
            def progress(done, total, owner_id=owner_id, number=number):
                self.stdout.write(f"[{number}/{len(owners)}] {owner_id}: {done}/{total} objects and values")

            result = storage_rotation.owner_rotate(owner_id, new_version=not resume, progress=progress)
            waiting += result["waiting"]
            failed += bool(result["failed"])
            self.stdout.write(
                f"[{number}/{len(owners)}] {owner_id}: storage key v{result['version']}; "
                f"{result['rewrapped']} re-wrapped, {result['current']} already current, {result['failed']} failed; "
                f"retired {result['retired'] or 'none'}")
        if failed:
            self.stdout.write(self.style.WARNING(f"{failed} users have objects that did not open (tampered or "
                                                 "foreign); their old key versions are kept"))
        if waiting:
            self.stdout.write(self.style.WARNING(f"{waiting} users still have an old version: run again with "
                                                 "--resume once the storage-key cache lifetime has passed"))
        if not failed and not waiting:
            self.stdout.write(self.style.SUCCESS("done: no user has an old storage key version left"))
