"""Webhook activity, shown as metadata only: the per-user page (own deliveries and channels, nobody
else's) and the staff admin (read-only, audited, no secret hashes)."""

import logging

import pytest
from django.test import Client

from aiemaily.webhooks.services import delivery_accept, delivery_reject, secret_digest, subscription_store
from tests.harness.factories import UserFactory, staff_admin_client

pytestmark = pytest.mark.django_db


def _activity(owner, stranger):
    import uuid

    subscription_store(provider="graph", external_id="sub-owner-1", account_id=owner.pk, connection_id=uuid.uuid4(),
                       secret_hash=secret_digest("client-state-of-the-owner"))
    mine = delivery_accept(provider="graph", delivery_id="g_mine0001", kind="created", account_id=owner.pk).delivery
    delivery_reject(provider="graph", verdict="bad_signature", delivery_id="sub-owner-1", kind="updated",
                    account_id=owner.pk)
    theirs = delivery_accept(provider="gmail", delivery_id="4242424242", kind="secretkind",
                             account_id=stranger.pk).delivery
    return mine, theirs


@pytest.mark.claim("owner-scoping")
def test_a_user_sees_their_own_webhook_activity_and_nobody_elses():
    owner, stranger = UserFactory(), UserFactory()
    _activity(owner, stranger)
    client = Client()
    client.force_login(owner)
    response = client.get("/settings/webhooks/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "created" in html and "bad signature" in html and "Microsoft Graph" in html
    assert "secretkind" not in html and "Gmail push" not in html  # the stranger's delivery
    assert secret_digest("client-state-of-the-owner") not in html
    assert Client().get("/settings/webhooks/").status_code == 302  # signed out: to the login page
    assert client.post("/settings/webhooks/").status_code == 405


@pytest.mark.django_db(transaction=True, databases=["default", "maintenance"])
def test_staff_see_webhook_metadata_read_only_without_secret_hashes(caplog):
    owner, stranger = UserFactory(), UserFactory()
    mine, _ = _activity(owner, stranger)
    staff = UserFactory(is_staff=True, is_superuser=True)
    client = staff_admin_client(staff)  # the admin needs the second factor
    with caplog.at_level(logging.WARNING, logger="aiemaily.audit.unscoped"):
        listing = client.get("/admin/webhooks/webhookdelivery/")
        detail = client.get(f"/admin/webhooks/webhookdelivery/{mine.pk}/change/")
        channels = client.get("/admin/webhooks/webhooksubscription/")
    assert listing.status_code == 200 and "g_mine0001" in listing.content.decode()
    assert "4242424242" in listing.content.decode()  # staff see every account's deliveries
    assert detail.status_code == 200 and channels.status_code == 200
    assert secret_digest("client-state-of-the-owner") not in channels.content.decode()
    assert any("admin" in r.getMessage() for r in caplog.records)  # the unscoped read is audited
    assert client.get("/admin/webhooks/webhookdelivery/add/").status_code == 403
    assert client.post(f"/admin/webhooks/webhookdelivery/{mine.pk}/delete/", {"post": "yes"}).status_code == 403


def test_csrf_exemption_covers_the_webhook_routes_and_nothing_else_outside_the_api():
    """Besides the JSON API (bearer tokens; DRF applies its own CSRF check to session use) and the
    browser's CSP reports, only the three webhook routes skip CSRF."""
    from django.urls import URLPattern, URLResolver, get_resolver
    from rest_framework.views import APIView

    def walk(resolver, prefix=""):
        for pattern in resolver.url_patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                yield from walk(pattern, route)
            elif isinstance(pattern, URLPattern):
                yield route, pattern.callback

    from aiemaily.api.errors import api_not_found

    exempt = sorted(route for route, view in walk(get_resolver())
                    if getattr(view, "csrf_exempt", False)
                    and not issubclass(getattr(view, "cls", type(None)) or type(None), APIView))
    # The API's catch-all JSON 404 (it changes nothing) is the API's own, at exactly its prefix.
    assert [route for route, view in walk(get_resolver()) if view is api_not_found] == ["^api/"]
    exempt.remove("^api/")
    assert exempt == ["csp-report", "webhooks/gmail", "webhooks/graph", "webhooks/stripe"]
