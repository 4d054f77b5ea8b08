"""Create the application and maintenance database roles (run once per cluster, as the owning role).

    DATABASE_URL=postgres://owner@host/db manage.py db_roles --password-file /run/secrets/db_app \
        --maintenance-password-file /run/secrets/db_maintenance

The two passwords must differ: the app role's is given to every process, the maintenance role's only
to worker-maintenance and the admin process (DATABASE_MAINTENANCE_URL).
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from aiemaily.ownership.roles import ensure_roles


class Command(BaseCommand):
    help = "Create or correct the app (RLS-bound) and maintenance (BYPASSRLS) database roles."

    def add_arguments(self, parser):
        parser.add_argument("--password-file", help="file holding the app role's password")
        parser.add_argument("--maintenance-password-file", help="file holding the maintenance role's password")

    def handle(self, *args, password_file=None, maintenance_password_file=None, **options):
        if connection.vendor != "postgresql":
            raise CommandError("database roles exist only on PostgreSQL (DATABASE_URL)")
        password = Path(password_file).read_text().strip() if password_file else None
        maintenance_password = (Path(maintenance_password_file).read_text().strip()
                                if maintenance_password_file else None)
        if password and maintenance_password and password == maintenance_password:
            raise CommandError("the app and maintenance roles need different passwords")
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            owner = cursor.fetchone()[0]
            ensure_roles(
                cursor,
                owner_role=owner,
                app_role=settings.AIEMAILY_DB_APP_ROLE,
                maintenance_role=settings.AIEMAILY_DB_MAINTENANCE_ROLE,
                password=password,
                maintenance_password=maintenance_password,
            )
        self.stdout.write(
            f"roles ready: owner={owner} app={settings.AIEMAILY_DB_APP_ROLE} "
            f"maintenance={settings.AIEMAILY_DB_MAINTENANCE_ROLE}"
        )
