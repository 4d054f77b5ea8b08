"""The lean middleware path of webhook routes (aiemaily/webhooks/middleware.py).

Webhook routes skip the browser middleware (session, CSRF, user, OTP, messages, owner binding) but
keep everything that protects them: the security headers, the Host check, the view's own
decorations, one transaction rolled back on a 5xx. Only views marked by `webhook_endpoint` take it:
anything else under /webhooks/ goes through the full stack. The real routes' behaviour is tested
with each provider (tests/mail/test_webhooks_*.py, tests/billing/test_webhooks_stripe.py).
"""

import json
import time
import uuid

import pytest
import stripe
from django.http import HttpResponse, JsonResponse
from django.test import override_settings
from django.urls import path

from aiemaily.celery import app as celery_app
from aiemaily.security.middleware import FALLBACK_CSP
from aiemaily.urls import urlpatterns as real_urlpatterns
from aiemaily.webhooks.http import webhook_endpoint
from aiemaily.webhooks.models import Verdict, WebhookDelivery
from aiemaily.webhooks.services import delivery_reject, secret_digest, subscription_store
from tests.harness.factories import UserFactory
from tests.harness.webhook_helpers import Sent
from tests.project.test_security_headers import COMMON_HEADERS, REQUIRED_PERMISSIONS, HttpsClient

pytestmark = [pytest.mark.django_db]

SECRET = "whsec_" + "lean0secret0" * 3


def _what_the_view_saw(request):
    return JsonResponse({"user": hasattr(request, "user"), "session": hasattr(request, "session"),
                         "nonce": hasattr(request, "csp_nonce")})


@webhook_endpoint
def marked(request):
    return _what_the_view_saw(request)


def unmarked(request):
    return _what_the_view_saw(request)


@webhook_endpoint
def writes_then_fails(request):
    delivery_reject(provider="stripe", verdict=Verdict.MALFORMED, delivery_id="lean-path-5xx")
    return HttpResponse(status=503)


@webhook_endpoint
def writes_then_raises(request):
    delivery_reject(provider="stripe", verdict=Verdict.MALFORMED, delivery_id="lean-path-raise")
    raise RuntimeError("boom")


@webhook_endpoint(atomic=False)
def autocommit_write_then_fails(request):
    delivery_reject(provider="stripe", verdict=Verdict.MALFORMED, delivery_id="lean-path-autocommit")
    return HttpResponse(status=503)


urlpatterns = [
    path("webhooks/test-autocommit", autocommit_write_then_fails),
    path("webhooks/test-marked", marked),
    path("webhooks/test-unmarked", unmarked),
    path("webhooks/test-5xx", writes_then_fails),
    path("webhooks/test-raise", writes_then_raises),
    *real_urlpatterns,
]
HERE = override_settings(ROOT_URLCONF=__name__)


def _ledger(delivery_id: str) -> int:
    return WebhookDelivery.objects.unscoped(reason="test").filter(delivery_id=delivery_id).count()


def _signed_event() -> tuple[bytes, str]:
    body = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": "invoice.paid",
                       "created": int(time.time()), "data": {"object": {"id": "in_1"}}}).encode()
    return body, stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)


@pytest.fixture
def sent(monkeypatch):
    capture = Sent("billing.tasks.stripe_events_process")
    monkeypatch.setattr(celery_app, "send_task", capture)
    return capture


@HERE
def test_a_marked_webhook_view_runs_without_the_browser_middleware():
    seen = HttpsClient().post("/webhooks/test-marked", b"{}", content_type="application/json").json()
    assert seen == {"user": False, "session": False, "nonce": False}


@HERE
def test_an_unmarked_view_under_the_prefix_goes_through_the_full_stack():
    # Proves the mark, not the path, chooses the lean path (and that the test above can fail).
    seen = HttpsClient().post("/webhooks/test-unmarked", b"{}", content_type="application/json").json()
    assert seen == {"user": True, "session": True, "nonce": True}


def test_an_unknown_path_under_the_prefix_gets_the_full_stack_404():
    response = HttpsClient().post("/webhooks/no-such-provider", b"{}", content_type="application/json")
    assert response.status_code == 404
    # The app's 404 page with its full, nonce-carrying policy: it went through django-csp.
    assert response["Content-Security-Policy"] != FALLBACK_CSP
    assert "'nonce-" in response["Content-Security-Policy"]


def test_an_accepted_delivery_carries_every_security_header_and_nothing_for_browsers(
        settings, sent, django_capture_on_commit_callbacks):
    settings.STRIPE_WEBHOOK_SECRETS = [SECRET]
    body, signature = _signed_event()
    with django_capture_on_commit_callbacks(execute=True):
        response = HttpsClient().post("/webhooks/stripe", body, content_type="application/json",
                                      HTTP_STRIPE_SIGNATURE=signature, HTTP_ORIGIN="https://evil.example")
    assert response.status_code == 200 and response.content == b""
    assert [name for name, _ in sent.calls] == ["billing.tasks.stripe_events_process"]
    for name, value in COMMON_HEADERS.items():
        assert response.get(name) == value, name
    for feature in REQUIRED_PERMISSIONS:
        assert feature in response["Permissions-Policy"]
    assert response["Content-Security-Policy"] == FALLBACK_CSP  # an empty answer runs nothing
    assert "no-cache" in response["Cache-Control"] and "no-store" in response["Cache-Control"]
    assert not response.cookies and "cookie" not in response.get("Vary", "").lower()
    assert not any(name.lower().startswith("access-control-") for name in response.headers)


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "localhost:80@evil.example"])
def test_a_host_not_allowed_is_refused_before_the_view(settings, sent, host):
    settings.STRIPE_WEBHOOK_SECRETS = [SECRET]
    body, signature = _signed_event()
    response = HttpsClient().post("/webhooks/stripe", body, content_type="application/json",
                                  HTTP_STRIPE_SIGNATURE=signature, HTTP_HOST=host)
    assert response.status_code == 400
    assert sent.calls == [] and _ledger(json.loads(body)["id"]) == 0


def test_the_view_decorations_still_apply_on_the_lean_path():
    response = HttpsClient().get("/webhooks/stripe")
    assert response.status_code == 405 and response["Allow"] == "POST"


@HERE
def test_a_5xx_answer_rolls_back_what_the_view_wrote():
    response = HttpsClient().post("/webhooks/test-5xx", b"{}", content_type="application/json")
    assert response.status_code == 503
    assert _ledger("lean-path-5xx") == 0
    assert response["X-Frame-Options"] == "DENY"


@HERE
def test_an_exception_is_a_500_with_the_security_headers_and_nothing_written():
    client = HttpsClient(raise_request_exception=False)
    response = client.post("/webhooks/test-raise", b"{}", content_type="application/json")
    assert response.status_code == 500
    assert _ledger("lean-path-raise") == 0
    for name, value in COMMON_HEADERS.items():
        assert response.get(name) == value, name


@HERE
def test_a_view_marked_atomic_false_runs_without_a_transaction_of_its_own():
    # Its one write is not inside a block the 5xx rolls back (this test's own transaction aside).
    response = HttpsClient().post("/webhooks/test-autocommit", b"{}", content_type="application/json")
    assert response.status_code == 503
    assert _ledger("lean-path-autocommit") == 1


def test_a_graph_batch_of_several_items_is_recorded_all_or_nothing(monkeypatch, sent):
    from mail.webhooks import graph

    user = UserFactory()
    subscription_id, client_state = str(uuid.uuid4()), "lean-client-state-" + "c" * 40
    subscription_store(provider="graph", external_id=subscription_id, account_id=user.pk,
                       connection_id=uuid.uuid4(), secret_hash=secret_digest(client_state))
    items = [{"subscriptionId": subscription_id, "changeType": "created", "clientState": client_state,
              "resource": f"Users/x/Messages/AAMk{n}", "resourceData": {"id": str(n)}} for n in range(2)]
    calls = []

    def fail_second(accept):  # the database going away after the first item was recorded
        def accept_then_fail(**kwargs):
            calls.append(kwargs)
            if len(calls) == 2:
                raise RuntimeError("connection lost")
            return accept(**kwargs)
        return accept_then_fail

    # Either way of recording an item (on the subscription as read before, or as read again).
    monkeypatch.setattr(graph, "delivery_accept", fail_second(graph.delivery_accept))
    monkeypatch.setattr(graph, "delivery_accept_if_current", fail_second(graph.delivery_accept_if_current))
    response = HttpsClient(raise_request_exception=False).post(
        "/webhooks/graph", json.dumps({"value": items}), content_type="application/json")
    assert response.status_code == 500 and len(calls) == 2
    # The first item's row went with the batch, so Graph's retry is accepted, not a replay.
    assert _ledger(graph.item_digest(items[0])) == 0 and sent.calls == []
