"""The webhooks app: the delivery ledger and the subscription registry the routes look up."""

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "aiemaily.webhooks"
    label = "webhooks"
    verbose_name = "Inbound webhooks"
