"""A bounded load run through the production topology (scripts/prodsim.py): nginx/TLS, two webs,
PgBouncer, RabbitMQ, the workers, S3 and KMS (moto), SoftHSM2.

USERS users sign up through the site and connect a mailbox each on the local Dovecot, whose maildir
holds MESSAGES messages (written straight into the maildir: the fast seeder of the test harness);
the topology's own sync workers then pull them (parsed, bodies encrypted into S3, metadata sealed and
indexed), so the data is what a real first sync leaves. Then a second process (scripts/loadgen.py)
runs THREADS clients for SECONDS seconds, each call by a user picked at random: lists, searches,
message details, mark read/unread and sends (both queued to worker-sync), and probes of another
user's message (must be 404). Each user's messages (and sends) carry a marker of their own; any other
marker in any answer is a cross-owner leak. The run must have 0 errors and 0 leaks, and every send
must be delivered by worker-sync (through the local SMTP server) or still queued, never failed.

Full size: `make bench BENCH_ARGS="-k prod_sim_load"`. Smaller: AIEMAILY_LOAD_USERS,
AIEMAILY_LOAD_MESSAGES, AIEMAILY_LOAD_SECONDS, AIEMAILY_LOAD_THREADS.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scripts.prodsim import ROOT, ProdSim
from tests.project.test_prod_sim import PASSWORD, Site, superuser

USERS = int(os.environ.get("AIEMAILY_LOAD_USERS", "100"))
MESSAGES = int(os.environ.get("AIEMAILY_LOAD_MESSAGES", "1000"))
SECONDS = int(os.environ.get("AIEMAILY_LOAD_SECONDS", "180"))
THREADS = int(os.environ.get("AIEMAILY_LOAD_THREADS", "16"))
SYNC_TIMEOUT = int(os.environ.get("AIEMAILY_LOAD_SYNC_TIMEOUT", "3600"))

# Access tokens minted by the web zone itself (what /auth/token returns), for users created through
# the sign-up form: the token endpoint's throttle (20 a minute per address, and every client here is
# 127.0.0.1) is not what is measured. Five minutes of life covers a run of SECONDS <= 240.
MINT = """
import json
from rest_framework_simplejwt.tokens import RefreshToken
from accounts.models import User
emails = json.loads(open({path!r}).read())
tokens = {{u.email: str(RefreshToken.for_user(u).access_token) for u in User.objects.filter(email__in=emails)}}
print("TOKENS " + json.dumps(tokens))
"""


def _messages(marker: str) -> list[bytes]:
    return [(f"From: Sender {n % 50} <s{n % 50}@example.test>\r\nTo: me@example.test\r\n"
             f"Subject: {marker} note {n} about topic{n % 97}\r\n"
             f"Message-ID: <{uuid.uuid4().hex}@example.test>\r\n"
             f"Date: Mon, {1 + n % 28} Nov 2026 {n % 24:02d}:{n % 60:02d}:00 +0000\r\n"
             f"\r\nBody {n} for {marker}. " + "Lorem ipsum dolor sit amet. " * 20 + "\r\n").encode()
            for n in range(MESSAGES)]


class _Site(Site):
    def sign_up_only(self) -> "_Site":
        """The sign-up form (no token: the caller mints them all at once)."""
        page = self.http.get(self.url("/accounts/signup/"), timeout=60)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        response = self.http.post(self.url("/accounts/signup/"), timeout=60, allow_redirects=False,
                                  data={"csrfmiddlewaretoken": csrf, "email": self.email, "password1": PASSWORD,
                                        "password2": PASSWORD},
                                  headers={"Referer": self.url("/accounts/signup/"), "Origin": self.sim.url})
        assert response.status_code == 302, response.text[:1000]
        return self


def _mint_tokens(sim: ProdSim, root: Path, sites: list[_Site]) -> None:
    path = root / "emails.json"
    path.write_text(json.dumps([site.email for site in sites]))
    output = sim.manage("web", "shell", "-c", MINT.format(path=str(path)))
    tokens = json.loads(next(line for line in output.splitlines() if line.startswith("TOKENS "))[7:])
    for site in sites:
        site.token = tokens[site.email]


def _stored_counts(sim: ProdSim) -> dict[str, int]:
    with superuser(sim) as db:
        return {str(c): n for c, n in db.execute(
            "SELECT connection_id, count(*) FROM mail_message GROUP BY connection_id").fetchall()}


def test_load_through_the_production_topology(record_benchmark):
    root = Path(tempfile.mkdtemp(prefix="aiemaily-prodsim-bench-"))
    sim = ProdSim(root)
    timings = {}
    try:
        started = time.monotonic()
        sim.start()
        timings["topology"] = time.monotonic() - started

        started = time.monotonic()
        # Eight at a time: the two webs have four workers between them.
        with ThreadPoolExecutor(8) as pool:
            sites = list(pool.map(lambda _: _Site(sim).sign_up_only(), range(USERS)))
            _mint_tokens(sim, root, sites)

            def connect(site: _Site) -> tuple[_Site, str, str]:
                marker = f"mk{uuid.uuid4().hex[:10]}"
                return site, marker, site.connect_mailbox(_messages(marker))[0]

            users = list(pool.map(connect, sites))
        timings["sign_up"] = time.monotonic() - started

        # The first syncs, by the topology's two sync workers.
        started, last_print = time.monotonic(), 0.0
        while True:
            counts = _stored_counts(sim)
            done = sum(min(counts.get(c, 0), MESSAGES) for _, _, c in users)
            if done >= USERS * MESSAGES:
                break
            if time.monotonic() - last_print > 30:
                last_print = time.monotonic()
                print(f"[load] synced {done}/{USERS * MESSAGES} after {last_print - started:.0f} s", flush=True)
            assert time.monotonic() - started < SYNC_TIMEOUT, f"synced only {done} of {USERS * MESSAGES}"
            time.sleep(5)
        timings["sync"] = time.monotonic() - started
        counts = _stored_counts(sim)
        assert all(counts[c] == MESSAGES for _, _, c in users), "a mailbox has more rows than messages"

        with superuser(sim) as db:
            ids: dict[str, list[str]] = {}
            for connection_id, message_id in db.execute(
                    "SELECT connection_id, id FROM mail_message ORDER BY connection_id, id").fetchall():
                ids.setdefault(str(connection_id), []).append(str(message_id))
        _mint_tokens(sim, root, sites)  # fresh five-minute tokens for the run
        plan_users = []
        for site, marker, connection_id in users:
            foreign = [i for other, own in ids.items() if other != connection_id for i in own[:2]]
            plan_users.append({"email": site.email, "token": site.token, "marker": marker,
                               "connection_id": connection_id, "message_ids": ids[connection_id],
                               "foreign_ids": foreign})
        plan = {"url": sim.url, "ca_file": str(sim.ca.ca_file), "threads": THREADS, "seconds": SECONDS,
                "users": plan_users}
        (root / "plan.json").write_text(json.dumps(plan))
        run = subprocess.run([sys.executable, str(ROOT / "scripts" / "loadgen.py"), str(root / "plan.json")],
                             capture_output=True, text=True, timeout=SECONDS + 600)
        report = json.loads(run.stdout)

        # Every send is delivered by worker-sync or still on its way; none failed.
        sent_ids = [outbox_id for _, outbox_id in report["sent"]]
        deadline = time.monotonic() + 120
        while True:
            with superuser(sim) as db:
                statuses = dict(db.execute("SELECT status, count(*) FROM mail_outboxmessage WHERE id::text = ANY(%s) "
                                           "GROUP BY status", [sent_ids]).fetchall())
            if statuses.get("sent", 0) == len(sent_ids) or time.monotonic() > deadline:
                break
            time.sleep(5)
        assert report["leak_count"] == 0, report["leaks"]
        assert report["error_count"] == 0, report["errors"]
        assert not statuses.get("failed"), statuses
    finally:
        sim.stop()
        shutil.rmtree(root, ignore_errors=True)
    rows = "\n".join(f"| {kind} | {v['count']} | {v['p50_ms']:.1f} | {v['p95_ms']:.1f} |"
                     for kind, v in report["by_kind"].items())
    record_benchmark("prod-sim-load", f"""
## Load through the production topology (`make prod-sim`)

{USERS} users × {MESSAGES} messages each ({USERS * MESSAGES:,} in all), {THREADS} concurrent clients in a
second process (scripts/loadgen.py) for {SECONDS} s, each call by a user picked at random, over TLS
through nginx to two gunicorn web processes (2 workers each), PgBouncer (transaction pooling),
RabbitMQ and the workers, all with production settings on the same two cores. The users signed up
through the site and connected a mailbox each; their messages were written into Dovecot's maildirs
and pulled by the topology's own first syncs (two sync workers: {timings['sync']:.0f} s for all
{USERS * MESSAGES:,}, parsed, bodies encrypted into S3, metadata sealed and indexed). Mix: 35 % message
lists, 20 % searches (the user's marker: a word in all {MESSAGES:,} subjects), 20 % message details
(decrypted from S3 under the storage KMS), 10 % mark read/unread and 5 % sends (both queued to
worker-sync; sends delivered to the local SMTP server), 10 % another user's message id (must be 404).
Every answer checked for cross-owner data: each user's messages and sends carry a marker of their
own, and any other user's marker in an answer counts as a leak. The two cores are shared by all of
these processes, the load generator and (during this run) other work on the machine: the figures
are for a saturated machine, not a latency target.

| call | count | p50 ms | p95 ms |
|---|---|---|---|
{rows}
| **all** | {report['requests']} | {report['overall']['p50_ms']:.1f} | {report['overall']['p95_ms']:.1f} |

**{report['requests']} requests in {report['wall_seconds']:.0f} s ({report['throughput_rps']:.1f} req/s),
{report['error_count']} errors, {report['leak_count']} cross-owner answers; {len(sent_ids)} sends, of which
{statuses.get('sent', 0)} delivered within 2 minutes of the run's end and {statuses.get('failed', 0)} failed.**
Set-up: topology {timings['topology']:.0f} s, {USERS} sign-ups and mailbox connections {timings['sign_up']:.0f} s.
""")
