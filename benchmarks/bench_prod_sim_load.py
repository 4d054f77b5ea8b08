"""A bounded load run through the production topology (scripts/prodsim.py): nginx/TLS, two webs,
PgBouncer, RabbitMQ, the workers. USERS users with MESSAGES synced messages each; a second process
(scripts/loadgen.py) runs THREADS users at once, REQUESTS calls each: 40 % lists, 20 % searches,
20 % message details, 10 % mark read/unread (queued to worker-sync), 10 % probes of another user's
message (must be 404). Every answer is checked for cross-owner data; the run must have 0 errors
and 0 leaks. Latencies are client-side (TLS included), on the same two cores as every process.
"""

import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from scripts.prodsim import ROOT, ProdSim
from tests.project.test_prod_sim import Site, wait_synced

USERS = 8
MESSAGES = 40
THREADS = 8
REQUESTS = 150


def _messages(marker: str) -> list[bytes]:
    return [(f"From: Sender {n} <s{n}@example.test>\r\nTo: me@example.test\r\nSubject: {marker} note {n}\r\n"
             f"Message-ID: <{uuid.uuid4().hex}@example.test>\r\nDate: Mon, 2 Nov 2026 10:{n:02d}:00 +0000\r\n"
             f"\r\nBody {n} for {marker}. " + "Lorem ipsum dolor sit amet. " * 20 + "\r\n").encode()
            for n in range(MESSAGES)]


def test_load_through_the_production_topology(record_benchmark):
    root = Path(tempfile.mkdtemp(prefix="aiemaily-prodsim-bench-"))
    sim = ProdSim(root)
    try:
        sim.start()
        users = []
        for _ in range(USERS):
            site = Site(sim).sign_up()
            marker = f"mk{uuid.uuid4().hex[:10]}"
            connection_id, _ = site.connect_mailbox(_messages(marker))
            users.append((site, marker, connection_id))
        for _site, _marker, connection_id in users:
            wait_synced(sim, connection_id, MESSAGES)
        plan_users = []
        ids = {}
        for site, _marker, _ in users:
            # The sign-up's access token (5 minutes) outlasts the run: the token endpoint's throttle
            # (20 a minute per address, and every client here is 127.0.0.1) is not what is measured.
            listing = site.api("GET", "messages", params={"limit": 200}).json()["results"]
            ids[site.email] = [item["id"] for item in listing]
            assert len(ids[site.email]) == MESSAGES
        for site, marker, _ in users:
            foreign = [i for email, own in ids.items() if email != site.email for i in own[:5]]
            plan_users.append({"email": site.email, "token": site.token, "marker": marker,
                               "message_ids": ids[site.email], "foreign_ids": foreign})
        plan = {"url": sim.url, "ca_file": str(sim.ca.ca_file), "threads": THREADS, "requests_per_user": REQUESTS,
                "users": plan_users}
        (root / "plan.json").write_text(json.dumps(plan))
        run = subprocess.run([sys.executable, str(ROOT / "scripts" / "loadgen.py"), str(root / "plan.json")],
                             capture_output=True, text=True, timeout=900)
        report = json.loads(run.stdout)
        assert report["leak_count"] == 0, report["leaks"]
        assert report["error_count"] == 0, report["errors"]
        assert report["requests"] == USERS * REQUESTS
    finally:
        sim.stop()
        shutil.rmtree(root, ignore_errors=True)
    rows = "\n".join(f"| {kind} | {v['count']} | {v['p50_ms']:.1f} | {v['p95_ms']:.1f} |"
                     for kind, v in report["by_kind"].items())
    record_benchmark("prod-sim-load", f"""
## Load through the production topology (`make prod-sim`)

{USERS} users × {MESSAGES} synced messages, {THREADS} concurrent clients in a second process
(scripts/loadgen.py), {REQUESTS} calls each, over TLS through nginx to two gunicorn web processes
(2 workers each), PgBouncer (transaction pooling), RabbitMQ and the workers, all with production
settings on the same two cores. Mix: 40 % message lists, 20 % searches, 20 % message details
(decrypted from S3 under the storage KMS), 10 % mark read/unread (queued), 10 % another user's
message id (must be 404). Every answer checked for cross-owner data. The two cores are shared by
all of these processes (and by the load generator): the figures are for a saturated machine, not
a latency target.

| call | count | p50 ms | p95 ms |
|---|---|---|---|
{rows}
| **all** | {report['requests']} | {report['overall']['p50_ms']:.1f} | {report['overall']['p95_ms']:.1f} |

**{report['requests']} requests in {report['wall_seconds']:.1f} s ({report['throughput_rps']:.1f} req/s),
{report['error_count']} errors, {report['leak_count']} cross-owner answers.**
""")
