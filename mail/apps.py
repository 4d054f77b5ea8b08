from django.apps import AppConfig


class MailConfig(AppConfig):
    name = "mail"

    def ready(self):
        # The vault's OAuth code reaches the connection a grant serves through this port, so the
        # vault app never imports mail (secrets_vault/oauth/holder.py). Imported here, not at the
        # top of the module: models cannot be imported before the app registry is ready.
        from mail.grant_holder import ConnectionGrants
        from secrets_vault.oauth import holder

        holder.register(ConnectionGrants())
