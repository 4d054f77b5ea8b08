"""End to end in a real browser: a Free user presses Upgrade, is sent to the (local) Stripe-hosted
checkout page, pays there, comes back to the success page, and — once Stripe's signed event went
through /webhooks/stripe, the broker and a real worker-sync process — the page shows Pro by itself.
Then the Customer Portal round trip. No CSP violation on our pages on the way (form-action admits
the hosted origin on the billing pages only), and the only things the browser ever posted to our
server were the plan and CSRF tokens: card details go to Stripe's page, never to us."""

from urllib.parse import parse_qs

import pytest

from tests.harness.billing_fixtures import PRICE_PRO, WEBHOOK_SECRET, stripe_fake, stripe_server
from tests.harness.browser_fixtures import open_page, sign_in
from tests.harness.processes import Worker, wait_for
from tests.project.test_browser_csp import browser, violations  # noqa: F401 - fixture

__all__ = ["stripe_fake", "stripe_server"]

pytestmark = [pytest.mark.django_db(transaction=True, databases=["default", "vault"])]


@pytest.fixture
def sync_worker(tmp_path, stripe_fake, test_ca):
    """worker-sync with billing configured against the local Stripe (it runs billing's tasks)."""
    worker = Worker("sync", "sync", tmp_path / "sync.log", {
        "STRIPE_SECRET_KEY": stripe_fake.token, "STRIPE_PRICE_PRO": PRICE_PRO,
        "STRIPE_API_BASE": stripe_fake.origin, "AIEMAILY_STRIPE_CA_BUNDLE": str(test_ca.ca_file)})
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


@pytest.mark.claim("csp")
@pytest.mark.claim("billing-minimal-data")
def test_upgrade_through_hosted_checkout_and_the_webhook_shows_pro(browser, live_server, stripe_fake,  # noqa: F811
                                                                  sync_worker):
    from tests.harness.factories import UserFactory

    stripe_fake.deliver_to = (live_server.url + "/webhooks/stripe", WEBHOOK_SECRET)
    user = UserFactory()
    # The local Stripe's certificate comes from the test CA, which this browser does not know.
    context, page = open_page(browser, timeout_ms=20_000, ignore_https_errors=True)
    posted, console = [], []
    context.on("request", lambda r: posted.append((r.url, r.post_data or "")) if r.method == "POST"
               and r.url.startswith(live_server.url) else None)
    page.on("console", lambda m: console.append(m.text) if m.type in ("error", "warning") else None)
    try:
        sign_in(page, live_server.url, user)

        page.goto(live_server.url + "/billing/")
        assert page.get_attribute("[data-plan]", "data-plan") == "free"
        assert violations(page) == []
        page.click("#billing-upgrade")
        page.wait_for_url(stripe_fake.origin + "/pay/**")  # form-action let the redirect through
        (session,) = stripe_fake.sessions.values()
        assert session["client_reference_id"] == str(user.pk)

        page.click("#pay")  # on Stripe's page: whatever is typed there stays there
        page.wait_for_url(live_server.url + "/billing/success?session_id=*")
        assert violations(page) == []
        # The page polls our own status endpoint and reloads once the event has been applied.
        page.wait_for_selector("#billing-confirmed", timeout=60_000)
        assert page.get_attribute("[data-plan]", "data-plan") == "pro"
        assert page.get_attribute("[data-status]", "data-status") == "active"
        assert violations(page) == []
        # The first applied event already makes the page Pro; the other two may still be in flight.
        wait_for(lambda: len(stripe_fake.deliveries) == 3, what="all three deliveries")
        delivered = {event_id: status for event_id, status in stripe_fake.deliveries}
        assert len(delivered) == 3 and set(delivered.values()) == {200}
        assert "billing_event" in sync_worker.output()

        page.goto(live_server.url + "/billing/")
        assert page.get_attribute("[data-plan]", "data-plan") == "pro"
        page.click("#billing-manage")
        page.wait_for_url(stripe_fake.origin + "/portal/**")
        page.click("#return")
        page.wait_for_url(live_server.url + "/billing/")
        assert violations(page) == []
    finally:
        context.close()

    assert [line for line in console if "Content Security Policy" in line] == []
    # Everything the browser posted to us: the login form, then plan + CSRF token twice. No card.
    billing_posts = [(url, parse_qs(body)) for url, body in posted if "/billing/" in url]
    assert [url.removeprefix(live_server.url) for url, _ in billing_posts] == ["/billing/checkout",
                                                                               "/billing/portal"]
    assert set(billing_posts[0][1]) == {"csrfmiddlewaretoken", "plan"} and billing_posts[0][1]["plan"] == ["pro"]
    assert set(billing_posts[1][1]) == {"csrfmiddlewaretoken"}
