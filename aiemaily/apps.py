"""Project-wide app: database role grants after migrations, management commands, shared pieces."""

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AiemailyConfig(AppConfig):
    name = "aiemaily"
    label = "aiemaily"

    def ready(self):
        # Imported once the app registry is ready: these modules use models and DRF settings.
        import aiemaily.api.schema  # noqa: F401 - registers the OpenAPI auth extension
        from aiemaily.api.fields import install_strict_strings
        from aiemaily.ownership.roles import grant_table_privileges

        post_migrate.connect(grant_table_privileges, dispatch_uid="aiemaily_grants")
        install_strict_strings()
