from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self):
        # Imported once the app registry is ready: these modules use the models.
        from accounts import admin_site, signals  # noqa: F401 - connects the session ledger's receivers

        admin_site.install()
