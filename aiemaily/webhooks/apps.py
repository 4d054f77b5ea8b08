"""The webhooks app: the delivery ledger and the subscription registry the routes look up."""

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class WebhooksConfig(AppConfig):
    name = "aiemaily.webhooks"
    label = "webhooks"
    verbose_name = "Inbound webhooks"

    def ready(self):
        from aiemaily.webhooks.grants import grant_function_privileges

        post_migrate.connect(grant_function_privileges, sender=self, dispatch_uid="webhooks_function_grants")
