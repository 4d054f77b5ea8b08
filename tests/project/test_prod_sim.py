"""The production topology (scripts/prodsim.py, `make prod-sim`) brought up for real, used end to end,
then broken on purpose. `make faults` runs the fault tests (marker `faults`).

Everything below goes through nginx over TLS to the two web processes, the broker, PgBouncer and the
workers; nothing is mocked. Each fault test restores what it broke, so the next starts from a
healthy topology. Duplicate rows are counted in PostgreSQL itself (as the superuser, past RLS).
"""

import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from scripts.prodsim import ProdSim
from tests.harness.kms_fixtures import softhsm_token_removed
from tests.harness.mailservers import sample_messages
from tests.harness.processes import wait_for

PASSWORD = "correct horse battery staple"

# One topology (~15 processes) per run: under xdist (`make test` uses --dist loadgroup) every test
# here goes to the same worker, which starts it once.
pytestmark = pytest.mark.xdist_group("prodsim")


@pytest.fixture(scope="module")
def sim():
    root = Path(tempfile.mkdtemp(prefix="aiemaily-prodsim-test-"))
    topology = ProdSim(root)
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()
        shutil.rmtree(root, ignore_errors=True)


class Site:
    """One signed-up user, talking to the site through nginx over TLS (the CA verified)."""

    def __init__(self, sim: ProdSim):
        self.sim = sim
        self.http = session(sim)
        self.email = f"user-{uuid.uuid4().hex[:10]}@example.test"
        self.token = None

    def url(self, path: str) -> str:
        return self.sim.url + path

    def sign_up(self) -> "Site":
        page = self.http.get(self.url("/accounts/signup/"), timeout=30)
        assert page.status_code == 200, page.text[:500]
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        response = self.http.post(self.url("/accounts/signup/"), timeout=30, allow_redirects=False,
                                  data={"csrfmiddlewaretoken": csrf, "email": self.email, "password1": PASSWORD,
                                        "password2": PASSWORD},
                                  headers={"Referer": self.url("/accounts/signup/"), "Origin": self.sim.url})
        assert response.status_code == 302, response.text[:1000]
        token = self.http.post(self.url("/api/v1/auth/token"), json={"email": self.email, "password": PASSWORD},
                               timeout=30)
        assert token.status_code == 200, token.text
        self.token = token.json()["access"]
        return self

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        if method != "GET":
            headers.setdefault("Idempotency-Key", uuid.uuid4().hex)
        return self.http.request(method, self.url("/api/v1/" + path), headers=headers, timeout=60, **kwargs)

    def refresh_token(self) -> None:
        # Access tokens live 5 minutes; the fault tests outlast that.
        token = self.http.post(self.url("/api/v1/auth/token"), json={"email": self.email, "password": PASSWORD},
                               timeout=30)
        assert token.status_code == 200, token.text
        self.token = token.json()["access"]

    def connect_mailbox(self, messages: list[bytes]) -> tuple[str, str]:
        user, password = self.sim.add_mailbox()
        self.sim.dovecot.seed(user, messages)
        server = {"host": "localhost", "username": user, "password": password}
        response = self.api("POST", "connections", json={
            "provider": "imap", "email": user,
            "imap": {**server, "port": self.sim.dovecot.imaps_port, "security": "tls"},
            "smtp": {**server, "port": self.sim.smtp.starttls_port, "security": "starttls"}})
        assert response.status_code == 201, response.text
        return response.json()["id"], user


def session(sim: ProdSim) -> requests.Session:
    http = requests.Session()
    http.trust_env = False  # this machine's CA bundle and proxy variables would override ours
    http.verify = str(sim.ca.ca_file)
    return http


def superuser(sim: ProdSim):
    return psycopg.connect(f"postgresql://postgres@127.0.0.1:{sim.ports['postgres']}/aiemaily", autocommit=True)


def stored(sim: ProdSim, connection_id: str) -> tuple[int, int]:
    """(rows, distinct mailbox positions) of this connection's messages, counted by PostgreSQL."""
    with superuser(sim) as db:
        return db.execute("SELECT count(*), count(DISTINCT (folder_id, uidvalidity, uid)) FROM mail_message "
                          "WHERE connection_id = %s", [connection_id]).fetchone()


# "The first rows" waits are start-up, not behaviour: the first batch of 500 messages took over 60 s
# when two cores shared with other suites ran at a load average of 30.


def wait_synced(sim: ProdSim, connection_id: str, count: int, timeout: float = 240) -> None:
    wait_for(lambda: stored(sim, connection_id)[0] >= count, timeout=timeout, interval=0.5,
             what=f"{count} messages stored (now {stored(sim, connection_id)})")
    time.sleep(2)  # anything still running (a redelivered copy) has its chance to add rows
    rows, distinct = stored(sim, connection_id)
    assert rows == distinct == count, (rows, distinct, count)


def running_sync_worker(sim: ProdSim, task_name: str = "mail.tasks.connection_sync") -> tuple[str, str]:
    """(worker name, task id) of the sync worker that has received `task_name` and not finished it."""
    for name in ("worker-sync1", "worker-sync2"):
        text = sim[name].output(since_start=True)
        for task_id in re.findall(re.escape(task_name) + r"\[([0-9a-f-]+)\] received", text):
            if not re.search(re.escape(task_id) + r"\] (succeeded|raised|retry)", text):
                return name, task_id
    return "", ""


def ready(sim: ProdSim) -> tuple[int, dict]:
    response = session(sim).get(sim.url + "/readyz", timeout=30)
    is_json = response.headers.get("Content-Type", "").startswith("application/json")
    return response.status_code, response.json() if is_json else None


def test_a_user_signs_up_connects_a_mailbox_and_reads_it_through_the_whole_topology(sim):
    site = Site(sim).sign_up()
    connection_id, _ = site.connect_mailbox(sample_messages(30, malformed=False))
    # vault (SoftHSM KEK) seals the password, sync leases it, fetches over IMAPS and stores encrypted
    # bodies in S3 (moto) under a key wrapped by the storage KMS; web reads them back.
    wait_synced(sim, connection_id, 30)
    listing = site.api("GET", "messages", params={"limit": 200})
    assert listing.status_code == 200, listing.text
    messages = listing.json()["results"]
    assert len(messages) == 30
    detail = site.api("GET", f"messages/{messages[0]['id']}")
    assert detail.status_code == 200, detail.text
    connection = site.api("GET", f"connections/{connection_id}").json()
    assert connection["status"] == "active", connection
    assert ready(sim) == (200, {"status": "ready"})
    # Both web processes served this user (nginx round-robins): the session and JWT work on either.
    served = [sim[name].output().count("/api/v1/") for name in ("web1", "web2")]
    assert all(count > 0 for count in served), served


def test_every_process_runs_with_production_settings_and_only_its_zones_secrets(sim):
    for name in sim.app_processes():
        env = sim[name].env
        assert env["AIEMAILY_ENV"] == "production"
        zone = env["AIEMAILY_PROCESS"]
        assert ("JWT_PRIVATE_KEY_FILE" in env) == (zone == "web"), name
        assert ("VAULT_DATABASE_URL" in env) == (zone == "vault"), name
        assert ("AIEMAILY_PKCS11_PIN_FILE" in env) == (zone == "vault"), name
        assert ("AIEMAILY_SYNC_PRIVATE_KEY_FILE" in env) == (zone in ("sync", "idle")), name
        assert ("DATABASE_MAINTENANCE_URL" in env) == (zone == "maintenance"), name
        assert ("KEYS_DATABASE_URL" in env) == (zone in ("web", "sync", "idle", "ai")), name
        assert env["DATABASE_PGBOUNCER"] == "true" and f":{sim.ports['pgbouncer']}/" in env["DATABASE_URL"]
        assert env["CELERY_BROKER_URL"].startswith("amqp://")


# --- faults ------------------------------------------------------------------------------------------


@pytest.mark.faults
def test_a_sync_worker_killed_mid_sync_is_redelivered_and_the_mail_is_stored_once(sim):
    site = Site(sim).sign_up()
    count = 1500
    connection_id, _ = site.connect_mailbox(sample_messages(count, malformed=False))
    victim, task_id = wait_for(lambda: running_sync_worker(sim)[0] and running_sync_worker(sim), timeout=120,
                               what="a sync worker running the initial sync")
    wait_for(lambda: stored(sim, connection_id)[0] > 0, timeout=120, interval=0.05, what="the first rows")
    sim[victim].kill()  # SIGKILL to the worker and its pool: no ack was sent
    at_kill = stored(sim, connection_id)[0]
    assert at_kill < count, "the sync finished before the kill; the test proves nothing (raise the count)"
    try:
        survivor = "worker-sync2" if victim == "worker-sync1" else "worker-sync1"
        wait_for(lambda: f"[{task_id}] received" in sim[survivor].output(since_start=True), timeout=60,
                 what="the unacknowledged task redelivered to the other sync worker")
        wait_synced(sim, connection_id, count)
    finally:
        sim[victim].start()


@pytest.mark.faults
def test_a_broker_restart_during_a_sync_loses_nothing_and_stores_nothing_twice(sim):
    site = Site(sim).sign_up()
    count = 1500
    connection_id, user = site.connect_mailbox(sample_messages(count, malformed=False))
    wait_for(lambda: running_sync_worker(sim)[0], timeout=120, what="a sync worker running the initial sync")
    wait_for(lambda: stored(sim, connection_id)[0] > 0, timeout=120, interval=0.05, what="the first rows")
    sim["rabbitmq"].stop()
    assert stored(sim, connection_id)[0] < count, "the sync finished before the broker went; raise the count"
    time.sleep(2)
    sim["rabbitmq"].start()
    wait_synced(sim, connection_id, count)
    # Publishing works again: a new message and a manual sync go through the restarted broker.
    wait_for(lambda: ready(sim)[0] == 200, timeout=60, interval=1, what="/readyz after the broker restart")
    site.refresh_token()
    sim.dovecot.seed(user, sample_messages(1, malformed=False))
    response = wait_for(lambda: (r := site.api("POST", f"connections/{connection_id}/sync")).status_code == 202
                        and r, timeout=60, interval=1, what="a sync request accepted")
    assert response.status_code == 202
    wait_synced(sim, connection_id, count + 1, timeout=120)


def _assert_unavailable(site: Site, sim: ProdSim) -> None:
    api = site.api("GET", "messages")
    assert api.status_code == 503, (api.status_code, api.text[:300])
    assert api.headers["Content-Type"].startswith("application/json")
    assert api.json()["error"]["code"] == "service_unavailable"
    assert api.headers.get("Retry-After")
    page = site.http.get(site.url("/dashboard/"), timeout=30)
    assert page.status_code == 503, (page.status_code, page.text[:300])
    assert "briefly unavailable" in page.text
    assert ready(sim)[0] == 503


def _assert_recovers(site: Site, sim: ProdSim) -> None:
    wait_for(lambda: site.api("GET", "messages").status_code == 200, timeout=60, interval=0.5,
             what="the API answering again")
    wait_for(lambda: ready(sim) == (200, {"status": "ready"}), timeout=60, interval=1, what="/readyz ready")
    page = site.http.get(site.url("/dashboard/"), timeout=30)
    assert page.status_code == 200, "\n".join(
        line for name in ("web1", "web2") for line in sim[name].output(since_start=True).splitlines()
        if "Error" in line)[-3000:]


@pytest.mark.faults
@pytest.mark.parametrize("server", ["postgres", "pgbouncer"])
def test_a_database_outage_answers_503_not_500_and_recovers(sim, server):
    site = Site(sim).sign_up()
    for name in ("web1", "web2"):
        sim[name].mark()
    connection_id, user = site.connect_mailbox(sample_messages(5, malformed=False))
    wait_synced(sim, connection_id, 5)
    sim[server].stop()
    try:
        _assert_unavailable(site, sim)
    finally:
        sim[server].start()
    _assert_recovers(site, sim)
    # The workers recover too: new mail, synced on request.
    sim.dovecot.seed(user, sample_messages(1, malformed=False))
    response = site.api("POST", f"connections/{connection_id}/sync")
    assert response.status_code == 202, response.text
    wait_synced(sim, connection_id, 6, timeout=120)


def unreadable(sim: ProdSim, connection_id: str) -> int:
    """Rows of this connection stored as "could not be read" (the sample mail is all readable)."""
    with superuser(sim) as db:
        return db.execute("SELECT count(*) FROM mail_message WHERE connection_id = %s AND parse_error <> ''",
                          [connection_id]).fetchone()[0]


@pytest.mark.faults
def test_a_postgres_restart_during_a_sync_answers_503_meanwhile_and_the_sync_resumes_by_itself(sim):
    site = Site(sim).sign_up()
    count = 1000  # two fetch batches of 500: PostgreSQL goes once the first is stored, the second is under way
    connection_id, _ = site.connect_mailbox(sample_messages(count, malformed=False))
    worker, task_id = wait_for(lambda: running_sync_worker(sim)[0] and running_sync_worker(sim), timeout=120,
                               what="a sync worker running the initial sync")
    wait_for(lambda: stored(sim, connection_id)[0] > 0, timeout=120, interval=0.05, what="the first rows")
    sim["postgres"].stop()  # fast shutdown: every session, the sync worker's included, is cut
    try:
        _assert_unavailable(site, sim)
        # The worker notices at its next query (after the batch it is encrypting and storing, or up to
        # PgBouncer's query_wait_timeout of 120 s if its query waits there for a server) and schedules
        # a retry: no human, no beat.
        try:
            wait_for(lambda: re.search(re.escape(task_id) + r"\] (retry|raised|succeeded)",
                                       sim[worker].output(since_start=True)), timeout=150, what="the sync to notice")
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n" + sim[worker].output(since_start=True)[-3000:]) from None
        log = sim[worker].output(since_start=True)
        assert f"{task_id}] retry" in log, "the sync ended instead of waiting for the database:\n" + log[-3000:]
    finally:
        sim["postgres"].start()
    _assert_recovers(site, sim)
    # Resumed from where it stopped: every message once, none mistaken for unreadable mail because
    # the database was away when its row was written.
    # The last retry waits up to 30 s, then what is left syncs (the 1,000 left of a 1,500-message sync
    # took 80 s when two cores shared with other suites ran this at a load average of 30).
    try:
        wait_synced(sim, connection_id, count, timeout=180)
    except AssertionError as exc:
        lines = [line[:400] for name in ("worker-sync1", "worker-sync2")
                 for line in sim[name].output(since_start=True).splitlines() if task_id in line or "outage" in line]
        raise AssertionError(f"{exc}; the sync task's log:\n" + "\n".join(lines)) from None
    assert unreadable(sim, connection_id) == 0
    assert site.api("GET", f"connections/{connection_id}").json()["status"] == "active"


class Traffic:
    """Signed-in users who keep reading their own data (API and pages) from threads while something
    breaks, and check every answer for anyone else's data."""

    def __init__(self, sim: ProdSim, users: int = 3):
        self.sites = []
        for _ in range(users):
            site = Site(sim).sign_up()
            site.marker = f"marker-{uuid.uuid4().hex[:12]}"
            mail = [(f"From: a@example.test\r\nTo: b@example.test\r\nSubject: for {site.marker} {n}\r\n"
                     f"Message-ID: <{uuid.uuid4().hex}@example.test>\r\n\r\nbody {n}\r\n").encode() for n in range(2)]
            site.connection_id, _ = site.connect_mailbox(mail)
            # As browsers do (RFC 9112 9.3.1): a GET sent on a kept-alive connection that the server
            # closed at that moment (an old nginx worker leaving after a reload) is sent once more.
            site.http.mount("https://", HTTPAdapter(max_retries=Retry(
                total=1, connect=1, read=1, status=0, allowed_methods=frozenset({"GET"}), raise_on_status=False)))
            self.sites.append(site)
        for site in self.sites:
            wait_synced(sim, site.connection_id, 2, timeout=60)
        self.answers: list[tuple] = []  # (time, site index, what, status or exception name)
        self.foreign: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(users)]

    def _check(self, index: int, what: str, response: requests.Response) -> None:
        site, text = self.sites[index], response.text
        for other in self.sites:
            if other is not site and (other.email in text or other.marker in text):
                self.foreign.append(f"{site.email} got {other.email}'s data from {what}: {text[:300]}")
        if response.status_code != 200:
            return
        if what == "account" and response.json().get("email") != site.email:
            self.foreign.append(f"{site.email} got account {response.json().get('email')}")
        if what == "messages":
            subjects = [item.get("subject", "") for item in response.json()["results"]]
            if len(subjects) != 2 or not all(site.marker in subject for subject in subjects):
                self.foreign.append(f"{site.email} got messages {subjects}")
        if what == "page" and site.email not in text:
            self.foreign.append(f"{site.email}'s dashboard does not name them: {text[:300]}")

    def _client(self, index: int) -> None:
        site = self.sites[index]
        calls = {"account": lambda: site.api("GET", "account"),
                 "messages": lambda: site.api("GET", "messages", params={"limit": 50}),
                 "page": lambda: site.http.get(site.url("/dashboard/"), timeout=30)}
        while not self._stop.is_set():
            for what, call in calls.items():
                try:
                    response = call()
                except requests.RequestException as exc:
                    self.answers.append((time.monotonic(), index, what, type(exc).__name__))
                    continue
                self.answers.append((time.monotonic(), index, what, response.status_code))
                self._check(index, what, response)
            time.sleep(0.1)  # about 3 requests per 0.3 s per user: well under the API throttle

    def __enter__(self) -> "Traffic":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def since(self, moment: float) -> list[tuple]:
        return [answer for answer in list(self.answers) if answer[0] >= moment]

    def wait_all_served(self, what: str, timeout: float = 30) -> float:
        """Waits until every user has had a 200 on every kind of call after now; returns when."""
        start = time.monotonic()
        wanted = {(i, kind) for i in range(len(self.sites)) for kind in ("account", "messages", "page")}
        wait_for(lambda: wanted <= {(a[1], a[2]) for a in self.since(start) if a[3] == 200}, timeout=timeout,
                 interval=0.2, what=what)
        return time.monotonic()


@pytest.mark.faults
def test_nginx_reloaded_and_restarted_under_live_traffic_serves_nobody_anothers_data(sim):
    with Traffic(sim) as traffic:
        traffic.wait_all_served("the clients to start")
        # A reload (new configuration, new workers; the old ones finish what they hold): nothing fails.
        reload_at = time.monotonic()
        sim["nginx"].reload()
        traffic.wait_all_served("every client served after the reload")
        time.sleep(1)
        during_reload = [a for a in traffic.since(reload_at) if a[3] != 200]
        # A full restart: connections are refused while nginx is down; the clients get back by themselves.
        restart_at = time.monotonic()
        sim["nginx"].restart(down_seconds=1)
        traffic.wait_all_served("every client served after the restart")
        time.sleep(1)
    answers = traffic.since(restart_at)
    assert not traffic.foreign, traffic.foreign[:5]
    assert during_reload == [], during_reload
    failures = {a[3] for a in answers if a[3] != 200}
    # Refused connections while it was down, nothing else: no 502 from nginx, no 5xx from the app.
    assert failures <= {"ConnectionError"}, failures
    assert sum(1 for a in answers if a[3] == 200) >= 3 * len(traffic.sites)


def _objects_containing(sim: ProdSim, needle: bytes) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=sim.moto_url, region_name="us-east-1", aws_access_key_id="prodsim",
                      aws_secret_access_key="prodsim")
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="aiemaily-objects"):
        for item in page.get("Contents", []):
            if needle in s3.get_object(Bucket="aiemaily-objects", Key=item["Key"])["Body"].read():
                found.append(item["Key"])
    return found


@pytest.mark.faults
def test_with_the_storage_kms_unreachable_nothing_is_stored_in_plaintext_and_it_recovers(sim):
    canary = f"kms-canary-{uuid.uuid4().hex}"
    message = (f"From: a@example.test\r\nTo: b@example.test\r\nSubject: quarterly numbers\r\n"
               f"Message-ID: <{uuid.uuid4().hex}@example.test>\r\n\r\nThe secret word is {canary}.\r\n").encode()
    site = Site(sim).sign_up()
    sim.kms_gate.close()
    try:
        status, body = wait_for(lambda: (r := ready(sim))[0] == 503 and r, timeout=30, interval=1,
                                what="/readyz to notice the KMS is gone")
        assert body == {"status": "not ready"}
        # A new user's first mail needs a storage key wrapped by the KMS: the sync must fail, not
        # fall back to storing the body unencrypted or under a local key.
        connection_id, _ = site.connect_mailbox(sample_messages(3, malformed=False) + [message])
        wait_for(lambda: any("mail.tasks.connection_sync" in sim[name].output(since_start=True)
                             and "EndpointConnectionError" in sim[name].output(since_start=True)
                             for name in ("worker-sync1", "worker-sync2")), timeout=120, interval=1,
                 what="the sync to fail on the unreachable KMS")
        assert stored(sim, connection_id) == (0, 0)
        assert _objects_containing(sim, canary.encode()) == []
    finally:
        sim.kms_gate.open()
    wait_for(lambda: ready(sim) == (200, {"status": "ready"}), timeout=60, interval=1, what="/readyz ready again")
    response = site.api("POST", f"connections/{connection_id}/sync")
    assert response.status_code == 202, response.text
    wait_synced(sim, connection_id, 4, timeout=120)
    listing = site.api("GET", "messages", params={"limit": 200}).json()["results"]
    mine = next(item for item in listing if item.get("subject") == "quarterly numbers")
    detail = site.api("GET", f"messages/{mine['id']}")
    assert detail.status_code == 200 and canary in detail.text
    assert _objects_containing(sim, canary.encode()) == []  # stored, and only encrypted


@pytest.mark.faults
def test_a_redis_outage_answers_503_on_the_api_and_recovers(sim):
    # Every API call passes the throttle, which counts in Redis: without Redis it cannot decide,
    # so the call is refused as unavailable (503, retry), never a 500 and never let through unthrottled.
    site = Site(sim).sign_up()
    assert site.api("GET", "messages").status_code == 200
    sim["redis"].stop()
    try:
        api = site.api("GET", "messages")
        assert api.status_code == 503, (api.status_code, api.text[:300])
        assert api.json()["error"]["code"] == "service_unavailable" and api.headers.get("Retry-After")
    finally:
        sim["redis"].start()
    wait_for(lambda: site.api("GET", "messages").status_code == 200, timeout=60, interval=0.5,
             what="the API answering again")
    # beat's lease lives in Redis too: beat is still running (it re-takes the lease, or stands by).
    assert sim["beat"].running


@pytest.mark.faults
def test_with_one_web_process_killed_nginx_keeps_serving_from_the_other(sim):
    site = Site(sim).sign_up()
    sim["web1"].kill()
    try:
        statuses = [site.api("GET", "messages").status_code for _ in range(20)]
        assert statuses == [200] * 20, statuses  # nginx passes over the dead upstream (no 502)
        assert ready(sim) == (200, {"status": "ready"})
    finally:
        sim["web1"].start()
    sim["web1"].mark()

    def web1_serves():
        assert site.api("GET", "messages").status_code == 200
        return "/api/v1/messages" in sim["web1"].output(since_start=True)

    # nginx retries a failed upstream after fail_timeout (10 s by default): back in the rotation.
    wait_for(web1_serves, timeout=60, interval=0.5, what="the restarted web process serving again")


def vault_state(sim: ProdSim, connection_id: str) -> tuple[str, str, int]:
    """(connection status, state of its IMAP password's Secret row, the owner's DEKs in the vault
    database), read by PostgreSQL past RLS."""
    with superuser(sim) as db:
        status, owner_id, state = db.execute(
            "SELECT c.status, c.owner_id, s.state FROM mail_connection c "
            "JOIN secrets_vault_secret s ON s.id = c.imap_secret_id WHERE c.id = %s", [connection_id]).fetchone()
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{sim.ports['postgres']}/aiemaily_vault",
                         autocommit=True) as vault:
        deks = vault.execute("SELECT count(*) FROM secrets_vault_datakey WHERE owner_id = %s",
                             [owner_id]).fetchone()[0]
    return status, state, deks


@pytest.mark.faults
def test_with_the_hsm_gone_mid_run_no_secret_is_stored_without_it_and_the_vault_recovers_by_itself(sim):
    # worker-vault holds a logged-in HSM session before the HSM goes: a first user's mailbox uses it.
    first = Site(sim).sign_up()
    first_id, _ = first.connect_mailbox(sample_messages(2, malformed=False))
    wait_synced(sim, first_id, 2, timeout=120)
    vault = sim["worker-vault"]
    vault_pid = vault.process.pid
    site = Site(sim).sign_up()
    vault.mark()
    # Celery's retry line, as the JSON log writes it: ...retry: Retry in 2s: KmsUnavailable(\"reason\")
    retries = re.compile(r'leases_issue\[[0-9a-f-]+\] retry: Retry in \d+s: KmsUnavailable\(\\?"(.*?)\\?"\)')
    with softhsm_token_removed(sim.hsm):
        # A new user's password must be encrypted under a new DEK, which only the HSM can wrap: the
        # vault refuses to store it any other way (no local key, no plaintext) and retries.
        connection_id, _ = site.connect_mailbox(sample_messages(3, malformed=False))
        try:
            wait_for(lambda: len(retries.findall(vault.output(since_start=True))) >= 2, timeout=60, interval=0.5,
                     what="the vault to fail twice on the missing HSM (the second time through a fresh session)")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; worker-vault:\n" + vault.output(since_start=True)[-3000:]) from None
        reasons = set(retries.findall(vault.output(since_start=True)))
        # Clear and non-secret: which token, and that it cannot be reached or holds no usable KEK.
        assert reasons and all(sim.hsm.token_label in reason for reason in reasons), reasons
        # What the user sees: the mailbox is still connecting (not an error: the vault will retry).
        assert site.api("GET", f"connections/{connection_id}").json()["status"] == "pending"
        assert vault_state(sim, connection_id) == ("pending", "pending", 0)
        assert stored(sim, connection_id) == (0, 0)
        assert list(sim.root.rglob("kek-v*.key")) == []  # no local KEK made to stand in for the HSM
        # Web neither holds nor needs the vault's KEK (aiemaily/ops/readiness.py): still ready.
        assert ready(sim) == (200, {"status": "ready"})
    # The same worker-vault, not restarted, gets through to the HSM again on a retry of the same task.
    try:
        wait_synced(sim, connection_id, 3, timeout=180)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; worker-vault:\n" + vault.output(since_start=True)[-3000:]) from None
    assert vault.running and vault.process.pid == vault_pid
    assert vault_state(sim, connection_id) == ("active", "stored", 1)
    assert site.api("GET", f"connections/{connection_id}").json()["status"] == "active"
    # Neither the HSM PIN nor the mailbox password ever reached a log, failure or not.
    for log_file in sim.logs.glob("*.log"):
        text = log_file.read_text(errors="replace")
        assert sim.hsm.user_pin not in text, log_file.name
        assert sim.dovecot.password not in text, log_file.name
