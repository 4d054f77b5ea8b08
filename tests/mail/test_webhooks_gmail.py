"""/webhooks/gmail: Pub/Sub pushes carrying OIDC tokens signed exactly as Google signs them (RS256,
a generated key whose certificate a local endpoint publishes), verified with google-auth against
cached certificates; deduplicated on the Pub/Sub messageId; a sync queued only for a newer
historyId. Watches: started on connect, renewed and repaired from beat, retired on disconnect.
"""

import json
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.test import Client

from aiemaily.ownership.binding import owner_scope
from aiemaily.webhooks.google_oidc import certificates
from aiemaily.webhooks.models import WebhookDelivery, WebhookSubscription
from aiemaily.webhooks.services import address_digest, subscription_store
from mail.models import Connection
from mail.sync import push
from mail.tasks import push_close, push_open, push_renew_due, webhook_process
from tests.harness.google_push import AUDIENCE, SERVICE_ACCOUNT, TOPIC, GoogleCerts, envelope
from tests.harness.https_server import session_server
from tests.harness.oauth_flow import browser, google, google_server, sent
from tests.harness.webhook_helpers import disconnect, dropped_log, handed, leased_run, record_chains, verdicts
from tests.mail.test_sync_gmail import gmail, gmail_server, lease_for, make_connection, objects_dir

__all__ = ["browser", "gmail", "gmail_server", "google", "google_server", "handed", "objects_dir", "sent"]

pytestmark = pytest.mark.django_db(databases=["default", "vault"])


certs_server = session_server(GoogleCerts, "certs_server")


@pytest.fixture
def google_certs(certs_server, settings, test_ca):
    certs_server.reset()
    settings.AIEMAILY_GOOGLE_CERTS_URL = certs_server.url
    settings.AIEMAILY_PROVIDER_CA_BUNDLE = str(test_ca.ca_file)
    settings.AIEMAILY_GMAIL_PUSH_AUDIENCE = AUDIENCE
    settings.AIEMAILY_GMAIL_PUSH_SERVICE_ACCOUNT = SERVICE_ACCOUNT
    settings.AIEMAILY_GMAIL_PUSH_TOPIC = TOPIC
    certificates.clear()
    yield certs_server
    certificates.clear()


@pytest.fixture
def ip():
    return f"2001:db8:9::{uuid.uuid4().hex[:4]}"


@pytest.fixture
def watched(user):
    """An active Gmail mailbox with a live watch in the registry."""
    connection = make_connection(user)
    channel = subscription_store(provider="gmail", external_id=address_digest(connection.email), account_id=user.pk,
                                 connection_id=connection.pk, expires_at=_in(days=6))
    return connection, channel


def _in(**delta):
    from django.utils import timezone

    return timezone.now() + timezone.timedelta(**delta)


def post(body: bytes, token: str | None, ip: str, content_type="application/json", client=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    return (client or Client()).post("/webhooks/gmail", body, content_type=content_type, REMOTE_ADDR=ip, **headers)


def notification(history_id: int, address="ada@gmail.test") -> dict:
    return {"emailAddress": address, "historyId": history_id}


@pytest.mark.claim("webhook-authenticity")
def test_a_signed_push_is_accepted_and_queues_one_history_sync(google_certs, watched, handed, ip,
                                                                 django_capture_on_commit_callbacks):
    connection, channel = watched
    with django_capture_on_commit_callbacks(execute=True):
        response = post(envelope(notification(5000), "1001"), google_certs.push_token(), ip)
    assert response.status_code == 204 and response.content == b""
    row = WebhookDelivery.objects.unscoped(reason="test").get()
    assert (row.provider, row.delivery_id, row.kind, row.verdict, row.account_id) == (
        "gmail", "1001", "push", "accepted", connection.owner_id)
    assert handed.processing() == [([str(row.pk)], str(connection.owner_id), str(connection.pk), "sync")]


@pytest.mark.claim("webhook-replay")
def test_a_replayed_message_id_is_acknowledged_and_not_queued_again(google_certs, watched, handed, ip,
                                                                     django_capture_on_commit_callbacks):
    body = envelope(notification(5000), "2002")
    with django_capture_on_commit_callbacks(execute=True):
        assert post(body, google_certs.push_token(), ip).status_code == 204
        assert post(body, google_certs.push_token(), ip).status_code == 204  # Pub/Sub's redelivery, a fresh token
        assert post(body, google_certs.push_token(), ip).status_code == 204
    assert verdicts("gmail") == ["accepted", "replay", "replay"]
    assert len(handed.processing()) == 1


@pytest.mark.claim("webhook-replay")
def test_only_a_newer_history_id_queues_a_sync(google_certs, watched, handed, ip, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        for history_id in (5000, 4990, 5000, 5001):
            assert post(envelope(notification(history_id)), google_certs.push_token(), ip).status_code == 204
    assert verdicts("gmail") == ["accepted"] * 4
    assert len(handed.ledger_ids()) == 2  # 5000 and 5001
    channel = WebhookSubscription.objects.unscoped(reason="test").get()
    assert channel.cursor == 5001
    # The two that changed nothing are processed (with nothing to do), not left pending.
    assert not WebhookDelivery.objects.unscoped(reason="test").filter(processed_at__isnull=True).exclude(
        pk__in=handed.ledger_ids()).exists()


def _other_key_token(google_certs):
    from tests.harness.google_push import _key_pair

    private, _ = _key_pair()
    now = int(time.time())
    return google_certs.sign({"aud": AUDIENCE, "email": SERVICE_ACCOUNT, "email_verified": True, "iat": now,
                              "exp": now + 3600, "iss": "https://accounts.google.com"}, private_pem=private)


def _unsigned_token():
    import base64

    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return part({"alg": "none", "typ": "JWT"}) + "." + part({"aud": AUDIENCE, "email": SERVICE_ACCOUNT,
                                                               "email_verified": True, "iat": now, "exp": now + 60,
                                                               "iss": "accounts.google.com"}) + "."


@pytest.mark.claim("webhook-authenticity")
@pytest.mark.parametrize(
    ("case", "verdict", "status"),
    [
        ("signed with another key", "bad_signature", 403),
        ("unknown key id", "bad_signature", 403),
        ("tampered claims", "bad_signature", 403),
        ("alg none", "bad_signature", 403),
        ("no token", "bad_signature", 403),
        ("basic auth", "bad_signature", 403),
        ("wrong audience", "bad_audience", 403),
        ("no audience", "bad_audience", 403),
        ("wrong issuer", "bad_audience", 403),
        ("wrong service account", "bad_audience", 403),
        ("unverified e-mail", "bad_audience", 403),
        ("e-mail verified as a string", "bad_audience", 403),
        ("stale", "stale", 403),
        ("future", "future", 403),
        ("not json", "malformed", 400),
        ("truncated", "malformed", 400),
        ("bad base64", "malformed", 400),
        ("no message id", "malformed", 400),
        ("history id not a number", "malformed", 400),
        ("oversized", "malformed", 400),
        ("wrong content type", "malformed", 400),
    ],
)
def test_a_push_that_is_not_authentic_fresh_and_well_formed_is_dropped(case, verdict, status, google_certs, watched,
                                                                       handed, ip, settings, caplog,
                                                                       django_capture_on_commit_callbacks):
    body, content_type = envelope(notification(7777), "3003"), "application/json"
    now = int(time.time())
    token = google_certs.push_token()
    if case == "signed with another key":
        token = _other_key_token(google_certs)
    elif case == "unknown key id":
        token = google_certs.sign(json.loads(_claims(token)), kid="f" * 40,
                                  private_pem=google_certs.keys[google_certs.kid][0])
    elif case == "tampered claims":
        head, _, sig = token.split(".")
        token = f"{head}.{_b64(json.dumps({**json.loads(_claims(token)), 'email': 'x@evil.test'}))}.{sig}"
    elif case == "alg none":
        token = _unsigned_token()
    elif case == "no token":
        token = None
    elif case == "basic auth":
        token = None
    elif case == "wrong audience":
        token = google_certs.push_token(aud="https://evil.example/webhooks/gmail")
    elif case == "no audience":
        token = google_certs.push_token(aud=None)
    elif case == "wrong issuer":
        token = google_certs.push_token(iss="https://evil.example")
    elif case == "wrong service account":
        token = google_certs.push_token(email="someone-else@attacker.iam.gserviceaccount.com")
    elif case == "unverified e-mail":
        token = google_certs.push_token(email_verified=False)
    elif case == "e-mail verified as a string":
        token = google_certs.push_token(email_verified="true")
    elif case == "stale":
        token = google_certs.push_token(iat=now - 7200, exp=now - 3600)
    elif case == "future":
        token = google_certs.push_token(iat=now + 3600, exp=now + 7200)
    elif case == "not json":
        body = b"3003 is not json"
    elif case == "truncated":
        body = body[:-9]
    elif case == "bad base64":
        body = json.dumps({"message": {"data": "!!not base64!!", "messageId": "3003"}}).encode()
    elif case == "no message id":
        body = json.dumps({**json.loads(body), "message": {"data": json.loads(body)["message"]["data"]}}).encode()
    elif case == "history id not a number":
        body = envelope({"emailAddress": "ada@gmail.test", "historyId": "seven"}, "3003")
    elif case == "oversized":
        settings.AIEMAILY_WEBHOOK_GMAIL_MAX_BYTES = 512
        body = envelope({**notification(7777), "padding": "x" * 600}, "3003")
    elif case == "wrong content type":
        content_type = "text/plain"
    client = Client()
    with django_capture_on_commit_callbacks(execute=True):
        if case == "basic auth":
            response = client.post("/webhooks/gmail", body, content_type=content_type, REMOTE_ADDR=ip,
                                   HTTP_AUTHORIZATION="Basic Z29vZ2xlOnB1c2g=")
        else:
            response = post(body, token, ip, content_type=content_type, client=client)
    assert response.status_code == status and response.content == b""  # no reason given
    assert verdicts("gmail") == [verdict]
    assert handed.calls == []  # nothing queued
    assert WebhookSubscription.objects.unscoped(reason="test").get().cursor is None
    assert dropped_log(caplog) == [verdict]
    assert all("7777" not in r.getMessage() and "ada@gmail" not in r.getMessage() for r in caplog.records)


def _claims(token: str) -> bytes:
    import base64

    part = token.split(".")[1]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def test_a_push_for_a_mailbox_we_do_not_watch_is_acknowledged_and_dropped(google_certs, watched, handed, ip, caplog):
    response = post(envelope(notification(9000, "stranger@gmail.test")), google_certs.push_token(), ip)
    assert response.status_code == 204
    assert verdicts("gmail") == ["unknown_subscription"] and handed.calls == []
    assert dropped_log(caplog) == ["unknown_subscription"]


def test_a_push_for_a_disconnected_mailbox_is_dropped(google_certs, watched, handed, ip, user,
                                                      django_capture_on_commit_callbacks):
    connection, _ = watched
    disconnect(user, connection.pk, django_capture_on_commit_callbacks, execute=False, keep_mail=True)
    with django_capture_on_commit_callbacks(execute=True):
        assert post(envelope(notification(9100)), google_certs.push_token(), ip).status_code == 204
    assert verdicts("gmail") == ["stale"] and handed.calls == []


@pytest.mark.claim("webhook-authenticity")
def test_certificates_are_cached_and_fetched_again_for_a_new_key(google_certs, watched, handed, ip,
                                                                 django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(10):
            assert post(envelope(notification(100 + n)), google_certs.push_token(), ip).status_code == 204
        assert google_certs.fetches() == 1
        google_certs.rotate()  # Google starts signing with a key we have not seen
        response = post(envelope(notification(200)), google_certs.push_token(), ip)
        assert (response.status_code, google_certs.fetches(), verdicts("gmail")[-1]) == (204, 2, "accepted")
        # Invented key ids do not make us fetch again and again.
        for _ in range(5):
            forged = google_certs.sign(json.loads(_claims(google_certs.push_token())), kid=uuid.uuid4().hex,
                                       private_pem=google_certs.keys[google_certs.kid][0])
            assert post(envelope(notification(300)), forged, ip).status_code == 403
        assert google_certs.fetches() == 2
    assert verdicts("gmail").count("accepted") == 11


@pytest.mark.claim("webhook-authenticity")
def test_a_flood_of_forged_tokens_is_throttled_without_touching_google(google_certs, watched, handed, settings,
                                                                       django_capture_on_commit_callbacks):
    settings.AIEMAILY_WEBHOOK_FAILURE_LIMIT = 10
    attacker, google_ip = f"2001:db8:bad::{uuid.uuid4().hex[:4]}", f"2001:db8:6::{uuid.uuid4().hex[:4]}"
    statuses, genuine = [], []
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(30):
            statuses.append(post(envelope(notification(1)), _other_key_token(google_certs), attacker).status_code)
            if n % 3 == 0:
                genuine.append(post(envelope(notification(1000 + n)), google_certs.push_token(), google_ip).status_code)
    assert statuses[:10] == [403] * 10 and set(statuses[10:]) == {429}
    assert genuine == [204] * 10 and len(handed.ledger_ids()) == 10


def test_only_post_is_allowed_the_route_is_csrf_exempt_and_there_is_no_cors(google_certs, watched, handed, ip):
    client = Client(enforce_csrf_checks=True)
    assert client.get("/webhooks/gmail", REMOTE_ADDR=ip).status_code == 405
    response = client.options("/webhooks/gmail", REMOTE_ADDR=ip, HTTP_ORIGIN="https://evil.example",
                              HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
    assert response.status_code == 405 and "Access-Control-Allow-Origin" not in response
    assert post(envelope(notification(1)), google_certs.push_token(), ip, client=client).status_code == 204


@pytest.mark.django_db(transaction=True, databases=["default", "vault"])
@pytest.mark.claim("webhook-replay")
def test_a_concurrent_burst_with_duplicates_is_processed_exactly_once(google_certs, watched, handed, live_server):
    bodies = [envelope(notification(10_000 + n), str(500_000 + n)) for n in range(700)]
    deliveries = bodies + bodies[:300]  # 1,000 pushes, 30% of them duplicates
    random.Random(7).shuffle(deliveries)
    token = google_certs.push_token()
    url = live_server.url + "/webhooks/gmail"

    def deliver(body):
        return requests.post(url, data=body, headers={"Content-Type": "application/json",
                                                      "Authorization": f"Bearer {token}"}, timeout=30).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(deliver, deliveries))
    assert statuses == [204] * 1000
    rows_ = WebhookDelivery.objects.unscoped(reason="test")
    assert rows_.filter(verdict="accepted").count() == 700 and rows_.filter(verdict="replay").count() == 300
    queued = handed.ledger_ids()
    assert len(queued) == len(set(queued))
    # Every accepted push is processed once: queued for a sync, or (an older history id than one
    # already queued) settled at once. Never both, never neither.
    accepted = set(map(str, rows_.filter(verdict="accepted").values_list("pk", flat=True)))
    settled = set(map(str, rows_.filter(verdict="accepted", processed_at__isnull=False).values_list("pk", flat=True)))
    assert set(queued) | settled == accepted and not set(queued) & settled
    # Running the queued hand-offs claims each once; a redelivered task finds it claimed.
    owner, connection_id = watched[0].owner_id, watched[0].pk
    with owner_scope(owner):
        Connection.objects.for_owner(owner).filter(pk=connection_id).update(status="disconnected")
    results = [webhook_process(*args) for args in handed.processing()]
    assert all(r["status"] == "gone" for r in results)
    assert webhook_process(*handed.processing()[0])["status"] == "already_processed"
    assert WebhookSubscription.objects.unscoped(reason="test").get().cursor >= 10_000


# --- watches --------------------------------------------------------------------------------------

def test_a_watch_is_started_renewed_repaired_and_not_duplicated(google_certs, gmail, user, settings,
                                                                 django_capture_on_commit_callbacks):
    connection = make_connection(user)
    result = push_open(lease_for(user.pk, connection.pk, gmail.token), owner_id=str(user.pk),
                       connection_id=str(connection.pk))
    assert result["status"] == "watching" and gmail.watch["topicName"] == TOPIC
    channel = WebhookSubscription.objects.unscoped(reason="test").get()
    assert channel.external_id == address_digest("ada@gmail.test") and channel.connection_id == connection.pk
    assert "ada@gmail.test" not in str(WebhookSubscription.objects.unscoped(reason="test").values().get())
    assert not push.channel_due(connection)
    # A day later it is due (Google: renew daily); an expired (lapsed) watch is due at once.
    WebhookSubscription.objects.unscoped(reason="test").update(renewed_at=_in(hours=-24))
    assert push.channel_due(connection)
    WebhookSubscription.objects.unscoped(reason="test").update(renewed_at=_in(), expires_at=_in(hours=-1))
    assert push.channel_due(connection)
    push_open(lease_for(user.pk, connection.pk, gmail.token), owner_id=str(user.pk), connection_id=str(connection.pk))
    assert gmail.watch_calls == 2 and WebhookSubscription.objects.unscoped(reason="test").count() == 1
    assert WebhookSubscription.objects.unscoped(reason="test").get().expires_at > _in(days=6)
    # No topic configured: no watch, nothing due.
    settings.AIEMAILY_GMAIL_PUSH_TOPIC = ""
    assert not push.channel_due(connection)


@pytest.mark.django_db(transaction=True, databases=["default", "vault", "maintenance"])
def test_beat_reopens_missing_and_lapsed_watches_only(google_certs, user, monkeypatch):
    from mail import tasks

    due = make_connection(user)
    fresh = make_connection(user)
    with owner_scope(user):
        Connection.objects.for_owner(user).filter(pk__in=[due.pk, fresh.pk]).update(oauth_secret=_secret(user))
    subscription_store(provider="gmail", external_id="x" * 64, account_id=user.pk, connection_id=fresh.pk,
                       expires_at=_in(days=6))
    queued = []
    monkeypatch.setattr(tasks.services, "connection_push_open_queue",
                        lambda *, connection: queued.append(connection.pk))
    assert push_renew_due()["queued"] == 1 and queued == [due.pk]


def _secret(user):
    from secrets_vault.crypto import SecretStr
    from secrets_vault.services import secret_submit

    with owner_scope(user):
        return secret_submit(owner=user, purpose="oauth_refresh_token", value=SecretStr("r" * 20), enqueue=False)


# --- end to end -----------------------------------------------------------------------------------

@pytest.mark.claim("webhook-authenticity")
def test_a_new_message_and_a_signed_push_appear_in_the_api_after_one_sync(
        auth_client, browser, user, gmail, google, sent, google_certs, handed, ip, monkeypatch,
        django_capture_on_commit_callbacks):
    """Connect at the local Google (the vault holds the refresh token); the connect queues the watch;
    the watch is made with a vault-leased token; a message arrives in Gmail and Pub/Sub pushes; the
    route queues the processing; it queues exactly one sync; that one sync shows the message."""
    from tests.mail.test_oauth_google import ACCOUNT, _connect
    from tests.mail.test_sync_gmail import mail, rows

    chains = record_chains(monkeypatch, names=True)
    gmail.email = ACCOUNT
    gmail.accepts = google.access_token_valid
    with django_capture_on_commit_callbacks(execute=True):
        connection_id = _connect(auth_client, browser, google, sent, django_capture_on_commit_callbacks)["id"]
    assert ["secrets_vault.tasks.oauth_access_lease", "mail.tasks.push_open"] in chains  # the watch, on connect
    assert leased_run(push_open, user, connection_id)["status"] == "watching"
    assert gmail.watch["topicName"] == TOPIC
    from mail.tasks import gmail_sync

    first = leased_run(gmail_sync, user, connection_id)
    assert first["status"] == "synced" and rows(user) == {}

    gmail.add(mail(42))
    chains.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert post(envelope(gmail.push_data()), google_certs.push_token(), ip).status_code == 204
    [args] = handed.processing()
    with django_capture_on_commit_callbacks(execute=True):
        assert webhook_process(*args)["status"] == "queued"
    assert chains == [["secrets_vault.tasks.oauth_access_lease", "mail.tasks.gmail_sync"]]  # one sync
    leased_run(gmail_sync, user, connection_id)
    listed = auth_client.get("/api/v1/messages", {"connection": connection_id}).json()["results"]
    assert [m["subject"] for m in listed] == ["Gmail message 42"]


def test_disconnect_stops_the_watch_at_gmail_then_revokes(auth_client, browser, user, gmail, google, sent,
                                                           google_certs, handed, ip, monkeypatch,
                                                           django_capture_on_commit_callbacks):
    from secrets_vault.tasks import oauth_close_lease, oauth_revoke
    from tests.mail.test_oauth_google import ACCOUNT, _connect

    gmail.email = ACCOUNT
    gmail.accepts = google.access_token_valid
    connection_id = _connect(auth_client, browser, google, sent, django_capture_on_commit_callbacks)["id"]
    leased_run(push_open, user, connection_id)
    assert gmail.watch is not None
    chains = record_chains(monkeypatch)
    disconnect(user, connection_id, django_capture_on_commit_callbacks, execute=True, keep_mail=True)
    [(close_lease, close, revoke)] = chains
    assert (close_lease.name, close.name, revoke.name) == (oauth_close_lease.name, push_close.name, oauth_revoke.name)
    # A push arriving now is already dropped: the watch was retired with the commit.
    assert post(envelope(gmail.push_data()), google_certs.push_token(), ip).status_code == 204
    assert verdicts("gmail") == ["stale"] and handed.calls == []
    lease = oauth_close_lease(*close_lease.args)
    assert push_close(lease, *close.args)["status"] == "stopped"
    assert gmail.watch is None and WebhookSubscription.objects.unscoped(reason="test").count() == 0
    assert oauth_revoke(*revoke.args)["status"] == "destroyed"
    # With the grant gone, no further lease: the chain still ends (the step gives {} and the close skips).
    assert oauth_close_lease(*close_lease.args) == {}
    assert push_close({}, *close.args)["status"] == "no_lease"
