"""Seal the subject, addresses and snippet of messages, and the recipients, subject and In-Reply-To
of outbox rows, stored in plaintext by releases before issue 17, and index the messages for search
(mail/metadata_migration.py).

    manage.py metadata_encrypt --all             every user
    manage.py metadata_encrypt --owner <id>      one user
    add --reindex to rebuild the search index of rows already sealed
    add --rotate to re-encrypt every sealed row (messages and outbox) under a new metadata key version (the old one is
    destroyed once unused and older than AIEMAILY_STORAGE_KEY_CACHE_SECONDS; --resume finishes)

Resumable: each batch commits on its own, and a run only looks at rows still in plaintext, so an
interrupted run is simply run again. Run with a mail zone's configuration (AIEMAILY_PROCESS=sync).
"""

from django.core.management.base import BaseCommand

from mail import metadata_migration
from mail.management.commands._storage import require_storage_zone


class Command(BaseCommand):
    help = "Encrypt plaintext message and outbox metadata under each user's keys and index messages for search."

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--owner")
        group.add_argument("--all", action="store_true")
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--reindex", action="store_true", help="also rebuild the index of sealed rows")
        parser.add_argument("--rotate", action="store_true", help="a new metadata key version for every row")
        parser.add_argument("--resume", action="store_true", help="with --rotate: no new version, finish")

    def handle(self, *args, owner=None, all=False, batch_size=500, reindex=False, rotate=False, resume=False,
               **options):
        require_storage_zone()
        owners = [owner] if owner else metadata_migration.owners()
        sealed = 0
        for number, owner_id in enumerate(owners, 1):
            def progress(done, total, owner_id=owner_id, number=number, what="sealed"):
                self.stdout.write(f"[{number}/{len(owners)}] {owner_id}: {done}/{total} messages {what}")

            count = metadata_migration.owner_encrypt(owner_id, batch_size=batch_size, progress=progress)
            sealed += count
            if reindex:
                metadata_migration.owner_reindex(
                    owner_id, progress=lambda d, t, o=owner_id, n=number: progress(d, t, o, n, "reindexed"))
            if rotate:
                result = metadata_migration.owner_rotate(
                    owner_id, new_version=not resume, batch_size=batch_size,
                    progress=lambda d, t, o=owner_id, n=number: progress(d, t, o, n, "checked for rotation"))
                self.stdout.write(f"[{number}/{len(owners)}] {owner_id}: metadata key v{result['version']}; "
                                  f"{result['resealed']} re-encrypted, {result['failed']} failed; "
                                  f"retired {result['retired'] or 'none'}"
                                  + ("; run again with --rotate --resume later" if result["waiting"] else ""))
        self.stdout.write(self.style.SUCCESS(f"done: {sealed} messages sealed"))
