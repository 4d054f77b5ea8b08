"""Rotate the credentials KEK: new version, online re-wrap of every DEK, then report what is left.

    manage.py vault_rotate_kek --init      create the first KEK version (production, once)
    manage.py vault_rotate_kek             new KEK version + re-wrap all DEKs (idempotent)
    manage.py vault_rotate_kek --resume    re-wrap only (after an interruption), no new version

Runs with worker-vault's configuration (AIEMAILY_PROCESS=vault). Safe while traffic runs: each DEK
is re-wrapped under a row lock, and old KEK versions keep unwrapping until nothing depends on them.
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from secrets_vault import keystore
from secrets_vault.kms import KmsError, kms_from_settings


class Command(BaseCommand):
    help = "Rotate the key-encryption key and re-wrap every data key under the new version."

    def add_arguments(self, parser):
        parser.add_argument("--init", action="store_true", help="create the first KEK version")
        parser.add_argument("--resume", action="store_true", help="re-wrap only; do not create a new version")
        parser.add_argument("--batch-size", type=int, default=200)

    def handle(self, *args, init=False, resume=False, batch_size=200, **options):
        try:
            keystore.require_vault()
        except keystore.VaultNotHere as exc:
            raise CommandError(f"{exc} (run with AIEMAILY_PROCESS=vault and its keys)") from None

        try:
            if init:
                service = kms_from_settings({**settings.AIEMAILY_KMS_CONFIG, "create": True})
                self.stdout.write(f"KEK ready: version {service.key_version}")
                return
            service = keystore.kms()
            if not resume:
                version = service.rotate()
                self.stdout.write(f"new KEK version {version}")

            def progress(done, total):
                self.stdout.write(f"re-wrapped {done}/{total}")

            result = keystore.rewrap_all(batch_size=batch_size, progress=progress)
        except KmsError as exc:
            raise CommandError(f"KMS error: {exc}") from None
        in_use = sorted(keystore.kek_versions_in_use())
        self.stdout.write(
            f"done: {result['rewrapped']} re-wrapped, {result['skipped']} already current; "
            f"KEK versions still in use: {in_use or 'none'}"
        )
        older = [v for v in in_use if v != service.key_version]
        if older:
            self.stdout.write(self.style.WARNING(f"versions {older} still in use: run again before retiring them"))
        else:
            self.stdout.write(self.style.SUCCESS("no data key depends on an older KEK version; it can be retired"))
