from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self):
        from accounts import admin_site, signals  # noqa: F401 - connects the session ledger's receivers

        admin_site.install()
