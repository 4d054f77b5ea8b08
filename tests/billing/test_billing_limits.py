"""Plan limits, enforced in the services (API and pages alike) and explained where the user meets
them: the number of mailboxes, and AI on the platform's key (Pro, active or trialing, or past_due
within the grace period). BYOK and the offline AI work on every plan. With billing unconfigured
nothing is limited. Pro comes from Stripe's events only, here as in production."""

import threading

import pytest
from django.db import connection as db_connection
from django.test import Client

from aiemaily.ownership.binding import owner_scope
from billing.events import stripe_event_apply, stripe_event_fetch
from mail.assistant.limits import platform_ai_allowed
from mail.assistant.models import AiResult, AiSettings
from mail.models import Connection
from tests.harness.billing_fixtures import signed_in_client, stripe_fake, stripe_server
from tests.harness.factories import UserFactory
from tests.mail.test_assistant import THREAD, _client, make_mailbox
from tests.mail.test_sync_imap import objects_dir  # noqa: F401 - fixture

__all__ = ["stripe_fake", "stripe_server"]

pytestmark = pytest.mark.django_db(databases=["default", "vault"])

IMAP = {"host": "localhost", "port": 993, "security": "tls", "username": "me", "password": "pw-one"}
SMTP = {"host": "localhost", "port": 465, "security": "tls", "username": "me", "password": "pw-two"}


@pytest.fixture(autouse=True)
def _local_hosts(settings):
    settings.AIEMAILY_ALLOWED_PRIVATE_HOSTS = ["localhost", "127.0.0.1"]


def add_imap(api, n: int):
    return api.post("/api/v1/connections", {"provider": "imap", "email": f"me{n}@example.test", "imap": IMAP,
                                            "smtp": SMTP}, format="json")


def mailboxes(user) -> int:
    with owner_scope(user):
        return Connection.objects.for_owner(user).count()


def make_pro(stripe_fake, user, *, status: str = "active") -> str:
    """Upgrade through Checkout and apply Stripe's events, as the webhook task would."""
    page = Client()
    page.force_login(user)
    page.post("/billing/checkout", {"plan": "pro"})
    session_id = [s for s, v in stripe_fake.sessions.items() if v["client_reference_id"] == str(user.pk)][-1]
    for event in stripe_fake.complete_checkout(session_id, status=status):
        stripe_event_apply(event=stripe_event_fetch(event["id"]))
    return stripe_fake.sessions[session_id]["subscription"]


def test_free_allows_one_mailbox_and_says_why_the_second_is_refused(stripe_fake, settings):
    settings.AIEMAILY_BILLING_FREE_MAILBOXES = 1
    api = _client(UserFactory())
    first = add_imap(api, 1)
    assert first.status_code == 201, first.content
    refused = add_imap(api, 2)
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "plan_limit"
    assert "Free plan allows 1 mailbox" in error["message"] and "/billing/" in error["message"]
    assert "pw-one" not in refused.content.decode()
    assert mailboxes(api.user) == 1


def test_connecting_gmail_counts_too_and_reauthorising_does_not(stripe_fake, settings):
    settings.AIEMAILY_BILLING_FREE_MAILBOXES = 1
    settings.GOOGLE_OAUTH_CLIENT_ID = "client-id.apps.googleusercontent.com"
    api = _client(UserFactory())
    first = api.post("/api/v1/connections", {"provider": "gmail"}, format="json")
    assert first.status_code == 201
    second = api.post("/api/v1/connections", {"provider": "gmail"}, format="json")
    assert second.status_code == 403 and second.json()["error"]["code"] == "plan_limit"
    assert mailboxes(api.user) == 1
    # Signing in again to the mailbox already connected is not a new mailbox.
    page = Client()
    page.force_login(api.user)
    again = page.post("/connections/add/gmail/", {"connection": first.json()["id"]})
    assert again.status_code == 302 and again["Location"].startswith("https://accounts.google.com/")


def test_the_connect_buttons_say_why_instead_of_going_to_google(stripe_fake, settings):
    settings.AIEMAILY_BILLING_FREE_MAILBOXES = 1
    settings.GOOGLE_OAUTH_CLIENT_ID = "client-id.apps.googleusercontent.com"
    client = signed_in_client()
    assert client.post("/connections/add/gmail/")["Location"].startswith("https://accounts.google.com/")
    refused = client.post("/connections/add/gmail/", follow=True)
    assert refused.redirect_chain == [("/connections/", 302)]
    body = refused.content.decode()
    assert "Free plan allows 1 mailbox" in body and 'id="plan-upgrade"' in body
    assert mailboxes(client.user) == 1


@pytest.mark.parametrize("role,holds_key", [("web", True), ("sync", True), ("ai", False), ("vault", False)])
def test_only_web_and_sync_hold_the_stripe_key_and_every_process_knows_limits_apply(role, holds_key):
    import subprocess
    import sys

    from tests.harness.processes import ROOT, role_env

    code = ("import django; django.setup(); from django.conf import settings; from billing import plans; "
            "print(settings.STRIPE_SECRET_KEY is not None, plans.limits_apply())")
    env = role_env(role, extra={"STRIPE_SECRET_KEY": "sk_test_canary_role_check", "STRIPE_PRICE_PRO": "price_x",
                                "DJANGO_SETTINGS_MODULE": "aiemaily.settings"})
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(holds_key), "True"]


def test_a_disconnected_mailbox_frees_its_place(stripe_fake, settings):
    settings.AIEMAILY_BILLING_FREE_MAILBOXES = 1
    api = _client(UserFactory())
    first = add_imap(api, 1).json()["id"]
    assert api.delete(f"/api/v1/connections/{first}?keep_mail=false").status_code == 204
    assert add_imap(api, 2).status_code == 201


def test_pro_allows_its_own_number_and_a_cancelled_subscription_falls_back_to_free(stripe_fake, settings):
    settings.AIEMAILY_BILLING_FREE_MAILBOXES = 1
    settings.AIEMAILY_BILLING_PRO_MAILBOXES = 3
    api = _client(UserFactory())
    subscription_id = make_pro(stripe_fake, api.user)
    assert [add_imap(api, n).status_code for n in range(4)] == [201, 201, 201, 403]
    assert "Pro plan allows 3 mailboxes" in add_imap(api, 9).json()["error"]["message"]
    stripe_fake.advance(5)
    stripe_event_apply(event=stripe_event_fetch(stripe_fake.cancel(subscription_id)["id"]))
    refused = add_imap(api, 5).json()["error"]["message"]
    assert "Free plan allows 1 mailbox" in refused and "subscription has ended" in refused


def test_billing_unconfigured_limits_nothing(settings):
    settings.STRIPE_SECRET_KEY = None
    settings.STRIPE_PRICE_PRO = None
    api = _client(UserFactory())
    assert [add_imap(api, n).status_code for n in range(3)] == [201, 201, 201]


def test_the_pages_say_the_mailbox_limit_and_link_to_upgrade(stripe_fake, settings):
    settings.AIEMAILY_BILLING_FREE_MAILBOXES = 1
    client = signed_in_client()
    assert 'id="plan-locked"' not in client.get("/connections/").content.decode()
    form = {"email": "me@example.test", "imap_host": "localhost", "imap_port": "993",
            "imap_security": "tls", "imap_password": "pw-one", "smtp_host": "localhost",
            "smtp_port": "465", "smtp_security": "tls", "smtp_same_password": "on"}
    added = client.post("/connections/add/imap/", form)
    assert added.status_code == 302, added.content.decode()
    page = client.get("/connections/").content.decode()
    assert 'id="plan-locked"' in page and "Free plan allows 1 mailbox" in page
    assert 'href="/billing/" id="plan-upgrade"' in page
    refused = client.post("/connections/add/imap/", dict(form, email="other@example.test"))
    assert refused.status_code == 403 and 'id="plan-upgrade"' in refused.content.decode()
    assert mailboxes(client.user) == 1


@pytest.mark.django_db(transaction=True, databases=["default", "vault"])
def test_two_mailboxes_added_at_once_cannot_both_take_the_last_place(stripe_fake, settings):
    settings.AIEMAILY_BILLING_FREE_MAILBOXES = 1
    user = UserFactory()
    barrier, statuses = threading.Barrier(2), []

    def add(n):
        try:
            api = _client(user)
            barrier.wait(5)
            statuses.append(add_imap(api, n).status_code)
        finally:
            db_connection.close()

    threads = [threading.Thread(target=add, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == [201, 403]
    assert mailboxes(user) == 1


# --- AI on the platform's key -------------------------------------------------------------------

def _platform(api):
    with owner_scope(api.user):
        AiSettings.objects.for_owner(api.user).update_or_create(owner=api.user, defaults={"mode": "platform"})


def test_platform_ai_on_free_is_refused_with_the_reason_in_the_api(stripe_fake, objects_dir):  # noqa: F811
    api = _client(UserFactory())
    _, messages = make_mailbox(api.user, THREAD)
    refused = api.patch("/api/v1/ai-settings", {"mode": "platform"}, format="json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "plan_limit"
    assert "needs an active Pro subscription" in refused.json()["error"]["message"]
    _platform(api)  # chosen while the plan still had it
    draft = api.post("/api/v1/drafts", {"message": str(messages[1].pk)}, format="json")
    assert draft.status_code == 403 and draft.json()["error"]["code"] == "plan_limit"
    summary = api.get(f"/api/v1/messages/{messages[1].pk}/summary")
    assert summary.status_code == 403 and summary.json()["error"]["code"] == "plan_limit"
    with owner_scope(api.user):
        assert not AiResult.objects.for_owner(api.user).exists()
    assert not platform_ai_allowed(owner_id=api.user.pk, kind="summary").allowed
    # Other settings can still be changed while the plan lacks it; only switching to it is refused.
    assert api.patch("/api/v1/ai-settings", {"redact_cards": True}, format="json").status_code == 200


def test_offline_and_byok_work_on_free(stripe_fake, objects_dir):  # noqa: F811
    api = _client(UserFactory())
    _, messages = make_mailbox(api.user, THREAD)
    assert api.patch("/api/v1/ai-settings", {"mode": "offline"}, format="json").status_code == 200
    assert api.post("/api/v1/drafts", {"message": str(messages[1].pk)}, format="json").status_code == 202
    with owner_scope(api.user):
        AiSettings.objects.for_owner(api.user).update(mode="byok")
    assert api.get(f"/api/v1/messages/{messages[1].pk}/summary").status_code == 202


def test_platform_ai_on_pro_and_in_the_grace_period_then_not(stripe_fake, settings, objects_dir):  # noqa: F811
    api = _client(UserFactory())
    _, messages = make_mailbox(api.user, THREAD)
    subscription_id = make_pro(stripe_fake, api.user)
    assert api.patch("/api/v1/ai-settings", {"mode": "platform"}, format="json").status_code == 200
    assert api.post("/api/v1/drafts", {"message": str(messages[1].pk)}, format="json").status_code == 202
    assert platform_ai_allowed(owner_id=api.user.pk, kind="draft").allowed
    for event in stripe_fake.fail_payment(subscription_id):
        stripe_event_apply(event=stripe_event_fetch(event["id"]))
    assert api.post("/api/v1/drafts", {"message": str(messages[1].pk)}, format="json").status_code == 202
    settings.AIEMAILY_BILLING_GRACE_DAYS = 0
    refused = api.post("/api/v1/drafts", {"message": str(messages[1].pk)}, format="json")
    assert refused.status_code == 403 and "grace period has ended" in refused.json()["error"]["message"]
    assert not platform_ai_allowed(owner_id=api.user.pk, kind="draft").allowed


def test_trialing_counts_as_pro(stripe_fake, objects_dir):  # noqa: F811
    api = _client(UserFactory())
    make_pro(stripe_fake, api.user, status="trialing")
    assert api.patch("/api/v1/ai-settings", {"mode": "platform"}, format="json").status_code == 200


def test_the_message_and_settings_pages_say_why_platform_ai_is_locked(stripe_fake, objects_dir):  # noqa: F811
    api = _client(UserFactory())
    _, messages = make_mailbox(api.user, THREAD)
    client = Client()
    client.force_login(api.user)
    settings_page = client.post("/mail/assistant/", {"mode": "platform", "third_party_enabled": "on"})
    assert settings_page.status_code == 400
    body = settings_page.content.decode()
    assert "needs an active Pro subscription" in body and 'id="plan-upgrade"' in body
    _platform(api)
    page = client.get(f"/mail/{messages[1].pk}/")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'id="plan-locked"' in body and "needs an active Pro subscription" in body and "data-ai-poll" not in body
    draft = client.post(f"/mail/{messages[1].pk}/ai/draft/", {"tone": "friendly"}, follow=True)
    assert "needs an active Pro subscription" in draft.content.decode()
    with owner_scope(api.user):
        assert not AiResult.objects.for_owner(api.user).exists()
