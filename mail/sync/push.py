"""Push channels at the providers (worker-sync, with a leased access token): Gmail `users.watch` /
`users.stop`, Microsoft Graph `subscriptions` (create, renew, delete).

A channel is recorded in the webhook registry (aiemaily.webhooks.models.WebhookSubscription), which
is where /webhooks/gmail and /webhooks/graph find the mailbox a delivery concerns:
- Gmail: keyed by a keyed hash of the mailbox address (what a push names), with the watch's expiry.
  Google asks for a watch to be renewed at least every 7 days and recommends daily: beat does.
- Graph: keyed by the subscription id, with a keyed hash of the subscription's own random
  `clientState` (the secret Graph echoes in every notification; the value itself is never stored,
  logged or put on the broker: it is made here and sent only to Graph). Expiry below Graph's
  4,230-minute cap for mail; renewed by PATCH, recreated when Graph no longer knows it.
Nothing here is a secret for the web tier except the clientState, which it never sees in clear.
"""

import logging
import secrets
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from django.conf import settings
from django.utils import timezone

from aiemaily.webhooks.models import Provider
from aiemaily.webhooks.selectors import subscription_for_connection
from aiemaily.webhooks.services import (
    address_digest,
    secret_digest,
    subscription_forget,
    subscription_renewed,
    subscription_store,
)
from mail.models import Connection
from mail.selectors import push_provider
from mail.send.actions import api_for, call_once
from mail.sync.rest import ProviderError

logger = logging.getLogger(__name__)

GMAIL_USER = "/gmail/v1/users/me"
GRAPH_CAP_MINUTES = 4230
GRAPH_CHANGES = "created,updated,deleted"
GRAPH_RESOURCE = "me/messages"


def _parse_graph_time(value) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def channel_open(token, owner_id, connection: Connection) -> dict:
    """Start (or renew) the mailbox's channel; record it in the registry. Idempotent."""
    provider = push_provider(connection)
    if provider is None:
        return {"status": "not_configured"}
    api = api_for(connection.provider, token)
    try:
        if provider == Provider.GMAIL:
            return _gmail_watch(api, owner_id, connection)
        return _graph_subscribe(api, owner_id, connection)
    finally:
        api.close()


def _gmail_watch(api, owner_id, connection: Connection) -> dict:
    # users.watch again is how a watch is renewed: same topic, a new expiration.
    response = call_once(api, "POST", f"{GMAIL_USER}/watch", what="watch the mailbox",
                         json={"topicName": settings.AIEMAILY_GMAIL_PUSH_TOPIC})  # all labels
    payload = response.json() if response.content else {}
    try:
        expires_at = datetime.fromtimestamp(int(payload["expiration"]) / 1000, tz=UTC)
    except (KeyError, TypeError, ValueError, OverflowError):
        expires_at = timezone.now() + timedelta(days=7)
    row = subscription_store(provider=Provider.GMAIL, external_id=address_digest(connection.email),
                             account_id=owner_id, connection_id=connection.pk, expires_at=expires_at)
    logger.info("gmail watch for connection %s until %s", connection.pk, expires_at.isoformat())
    return {"status": "watching", "subscription_id": str(row.pk), "expires_at": expires_at.isoformat()}


def _graph_expiry() -> datetime:
    minutes = min(settings.AIEMAILY_GRAPH_SUBSCRIPTION_MINUTES, GRAPH_CAP_MINUTES - 5)
    return timezone.now() + timedelta(minutes=minutes)


def _graph_subscribe(api, owner_id, connection: Connection) -> dict:
    current = subscription_for_connection(provider=Provider.GRAPH, connection_id=connection.pk)
    expires = _graph_expiry()
    if current is not None:
        response = api._session().request(
            "PATCH", api.url(f"/subscriptions/{quote(current.external_id, safe='')}"),
            json={"expirationDateTime": expires.isoformat().replace("+00:00", "Z")}, timeout=30,
            allow_redirects=False, verify=settings.AIEMAILY_PROVIDER_CA_BUNDLE or True)
        if response.status_code == 200:
            granted = _parse_graph_time(response.json().get("expirationDateTime")) or expires
            subscription_renewed(subscription_id=current.pk, expires_at=granted)
            return {"status": "renewed", "subscription_id": str(current.pk), "expires_at": granted.isoformat()}
        if response.status_code not in (404, 410):
            raise ProviderError(f"Microsoft refused to renew the notification subscription "
                                f"(HTTP {response.status_code}).", status=response.status_code)
        # Graph no longer knows it (expired, removed): make a new one below.
    client_state = secrets.token_urlsafe(48)  # Graph allows up to 128 characters
    url = settings.AIEMAILY_GRAPH_NOTIFICATION_URL
    response = call_once(api, "POST", "/subscriptions", what="subscribe to mailbox changes", json={
        "changeType": GRAPH_CHANGES, "notificationUrl": url, "lifecycleNotificationUrl": url,
        "resource": GRAPH_RESOURCE, "expirationDateTime": expires.isoformat().replace("+00:00", "Z"),
        "clientState": client_state, "latestSupportedTlsVersion": "v1_2"})
    payload = response.json()
    subscription_id = str(payload.get("id") or "")
    if not subscription_id:
        raise ProviderError("Microsoft answered the subscription request without an id.")
    granted = _parse_graph_time(payload.get("expirationDateTime")) or expires
    row = subscription_store(provider=Provider.GRAPH, external_id=subscription_id, account_id=owner_id,
                             connection_id=connection.pk, secret_hash=secret_digest(client_state),
                             expires_at=granted)
    del client_state
    logger.info("graph subscription for connection %s until %s", connection.pk, granted.isoformat())
    return {"status": "subscribed", "subscription_id": str(row.pk), "expires_at": granted.isoformat()}


def channel_close(token, provider: str, external_id: str, connection_id) -> dict:
    """Stop the channel at the provider (a gone one counts as stopped) and forget it."""
    api = api_for(Connection.Provider.GMAIL if provider == Provider.GMAIL else Connection.Provider.MICROSOFT, token)
    try:
        if provider == Provider.GMAIL:
            call_once(api, "POST", f"{GMAIL_USER}/stop", what="stop watching the mailbox")
        else:
            response = api._session().request(
                "DELETE", api.url(f"/subscriptions/{quote(external_id, safe='')}"), timeout=30,
                allow_redirects=False, verify=settings.AIEMAILY_PROVIDER_CA_BUNDLE or True)
            if response.status_code not in (200, 204, 404):
                raise ProviderError(f"Microsoft refused to delete the subscription (HTTP {response.status_code}).",
                                    status=response.status_code)
    finally:
        api.close()
    subscription_forget(provider=provider, connection_id=connection_id)
    return {"status": "stopped"}


def channel_due(connection: Connection, *, now: datetime | None = None) -> bool:
    """Beat's question: does this mailbox's channel need opening or renewing now?

    Missing (never opened, removed, or forgotten after a failure), lapsed (expiry passed: pushes
    stopped without anyone saying so), expiring within a day, or (Gmail) not renewed for a day.
    """
    provider = push_provider(connection)
    if provider is None:
        return False
    now = now or timezone.now()
    row = subscription_for_connection(provider=provider, connection_id=connection.pk)
    if row is None or row.expires_at is None or row.expires_at <= now + timedelta(days=1):
        return True
    return provider == Provider.GMAIL and row.renewed_at <= now - timedelta(hours=23)
