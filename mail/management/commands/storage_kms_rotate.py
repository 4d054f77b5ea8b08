"""The storage KMS key (it wraps the per-user storage keys of bodies and metadata; distinct from
the credentials KEK): create it, rotate it, re-wrap every storage key under the new version.

    manage.py storage_kms_rotate --init      create the storage KMS key (production, once)
    manage.py storage_kms_rotate             new version + re-wrap every storage key (idempotent)
    manage.py storage_kms_rotate --resume    re-wrap only (after an interruption), no new version

Run with a mail zone's configuration (AIEMAILY_PROCESS=sync). Safe while traffic runs: each storage
key is re-wrapped under a row lock, and old versions keep unwrapping until nothing depends on them.
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mail import blobstore, storage_rotation
from mail.management.commands._storage import require_storage_zone
from secrets_vault.kms import KmsError, kms_from_settings


class Command(BaseCommand):
    help = "Create or rotate the storage KMS key and re-wrap every storage key under the new version."

    def add_arguments(self, parser):
        parser.add_argument("--init", action="store_true", help="create the storage KMS key (first version)")
        parser.add_argument("--resume", action="store_true", help="re-wrap only; do not create a new version")
        parser.add_argument("--batch-size", type=int, default=200)

    def handle(self, *args, init=False, resume=False, batch_size=200, **options):
        if settings.AIEMAILY_STORAGE_KMS_CONFIG is None:
            require_storage_zone()
        try:
            if init:
                # `create` makes the first local key file, or the AWS key and its alias, if missing.
                service = kms_from_settings({**settings.AIEMAILY_STORAGE_KMS_CONFIG, "create": True})
                self.stdout.write(f"storage KMS key ready: version {service.key_version}")
                return
            require_storage_zone()
            service = blobstore.storage_kms()
            if not resume:
                self.stdout.write(f"new storage KMS key version {service.rotate()}")

            def progress(done, total):
                self.stdout.write(f"re-wrapped {done}/{total}")

            result = storage_rotation.rewrap_all(batch_size=batch_size, progress=progress)
        except KmsError as exc:
            raise CommandError(f"KMS error: {exc}") from None
        in_use = sorted(storage_rotation.kms_versions_in_use())
        self.stdout.write(f"done: {result['rewrapped']} re-wrapped, {result['skipped']} already current; "
                          f"storage KMS key versions still in use: {in_use or 'none'}")
        older = [v for v in in_use if v != service.key_version]
        if older:
            self.stdout.write(self.style.WARNING(f"versions {older} still in use: run again with --resume "
                                                 "before retiring them"))
        else:
            self.stdout.write(self.style.SUCCESS("no storage key depends on an older version; it can be retired"))
