"""IDLE watchers at scale: one `idle` process holding WATCHERS IMAP IDLE sessions to a local Dovecot.

Real processes: worker-vault (leases, `-P solo`) and the idle worker as production runs it (Celery's
thread pool, one thread per watched mailbox: deploy/ sets its concurrency to the number of mailboxes
it should hold), the broker and PostgreSQL from the test harness, a Dovecot with its process limits
raised for this many sessions. Every watcher is queued the way a verified mailbox queues it
(services.connection_idle_queue: a vault lease, then idle_watch).

Measured: how long until all sessions are open; the idle process's CPU and resident memory over
IDLE_SECONDS of idling against its own figures with no watcher (the baseline, same process, same
run); the database connections it holds meanwhile; and, after a Dovecot restart, how long until
every session is back. The count of sessions is the count of established TCP connections to
Dovecot's IMAPS port (only the idle process opens any).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from django.db import connection as db
from django.db import transaction

from aiemaily.ownership.binding import owner_scope
from mail import services
from mail.models import Connection
from mail.tasks import IDLE_DATABASE_TURNS
from secrets_vault.crypto import SecretStr
from tests.harness.factories import UserFactory
from tests.harness.mailservers import Dovecot
from tests.harness.processes import ROOT, Worker, role_env, wait_for

WATCHERS = int(os.environ.get("AIEMAILY_BENCH_IDLE_WATCHERS", "500"))
IDLE_SECONDS = int(os.environ.get("AIEMAILY_BENCH_IDLE_SECONDS", "60"))
BASELINE_SECONDS = 20
BACKOFF_SECONDS = 5  # AIEMAILY_IDLE_BACKOFF_SECONDS, the production default

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "vault", "maintenance"])


def _sessions(port: int) -> int:
    """Established TCP connections whose remote end is 127.0.0.1:port (the clients' side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def _usage(pid: int, seconds: float) -> dict:
    """CPU % of one core and RSS (MiB, the mean of samples every 5 s) of `pid` over `seconds`."""
    rss, cpu_before, started = [], _cpu_seconds(pid), time.monotonic()
    while time.monotonic() - started < seconds:
        rss.append(_status(pid, "VmRSS") / 1024)
        time.sleep(min(5, max(0.0, seconds - (time.monotonic() - started))))
    wall = time.monotonic() - started
    return {"cpu_pct": 100 * (_cpu_seconds(pid) - cpu_before) / wall, "rss_mib": sum(rss) / len(rss),
            "rss_max_mib": max(rss), "threads": _status(pid, "Threads")}


def _dovecot_rss_mib(master_pid: int) -> float:
    """Resident memory of this Dovecot's processes (master, login, imap, auth, ...), MiB."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(proc.name))
    total, todo = 0, [master_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            total += _status(pid, "VmRSS")
        except (OSError, LookupError):
            continue
    return total / 1024


def _postgres_cpu_seconds() -> float:
    """CPU of the harness's PostgreSQL: the postmaster and every backend it has reaped (each check's
    short connection), read from the postmaster's own and its children's times."""
    with db.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    postmaster = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _app_db_connections() -> int:
    with db.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = current_user AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0]


def _mailbox(dovecot: Dovecot) -> Connection:
    owner = UserFactory()
    user, password = dovecot.add_user()
    server = {"host": "localhost", "port": dovecot.imaps_port, "security": "tls", "username": user,
              "password": SecretStr(password)}
    with owner_scope(owner), transaction.atomic():
        connection = services.connection_create_imap(owner=owner, email=user, imap=server, smtp=server)
        Connection.objects.for_owner(owner).filter(pk=connection.pk).update(status="active")
        connection.status = "active"
    return connection


def test_idle_watchers_at_scale(record_benchmark, test_ca, monkeypatch):
    # The bench starts the watchers itself; the verification a new mailbox queues would only add noise.
    monkeypatch.setattr(services, "_queue_verification", lambda connection: None)
    root = Path(tempfile.mkdtemp(prefix="aiemaily-dovecot-idle-bench-"))
    dovecot = Dovecot(root, test_ca, sessions=WATCHERS)
    mail_env = {"AIEMAILY_MAIL_CA_BUNDLE": str(test_ca.ca_file),
                "AIEMAILY_ALLOWED_PRIVATE_HOSTS": "127.0.0.1,localhost",
                "AIEMAILY_IDLE_BACKOFF_SECONDS": str(BACKOFF_SECONDS)}
    logs = Path(tempfile.mkdtemp(prefix="aiemaily-idle-bench-logs-"))
    vault = Worker("vault", "vault", logs / "vault.log", mail_env)
    idle_log = open(logs / "idle.log", "wb")  # noqa: SIM115 - closed below
    idle = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "aiemaily", "worker", "-Q", "idle", "-n", f"idle-{os.getpid()}@%h",
         "-P", "threads", "--concurrency", str(WATCHERS + 20), "--without-mingle", "--without-gossip",
         "--loglevel", "WARNING"],
        env=role_env("idle", extra=mail_env), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=idle_log,
        stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()
        mailboxes = [_mailbox(dovecot) for _ in range(WATCHERS)]
        setup_seconds = time.monotonic() - started
        vault.wait_ready()
        time.sleep(5)  # the idle worker's start-up (no "ready." line at WARNING level)
        assert idle.poll() is None, (logs / "idle.log").read_text()[-3000:]
        baseline = _usage(idle.pid, BASELINE_SECONDS)
        baseline_db = _app_db_connections()

        started = time.monotonic()
        for connection in mailboxes:
            with owner_scope(connection.owner_id), transaction.atomic():
                services.connection_idle_queue(connection=connection)
        wait_for(lambda: _sessions(dovecot.imaps_port) >= WATCHERS, timeout=1800, interval=0.5,
                 what=f"{WATCHERS} IDLE sessions (now {_sessions(dovecot.imaps_port)})")
        armed_seconds = time.monotonic() - started
        time.sleep(5)  # the last sessions' SELECT and IDLE
        postgres_before = _postgres_cpu_seconds()
        held = _usage(idle.pid, IDLE_SECONDS)
        postgres_pct = 100 * (_postgres_cpu_seconds() - postgres_before) / IDLE_SECONDS
        held_sessions = _sessions(dovecot.imaps_port)
        held_db = _app_db_connections()
        dovecot_rss = _dovecot_rss_mib(dovecot.process.pid)
        assert held_sessions == WATCHERS, held_sessions

        restarted = time.monotonic()
        dovecot.restart()
        wait_for(lambda: _sessions(dovecot.imaps_port) < WATCHERS // 2, timeout=60, interval=0.2,
                 what="the restart to drop the sessions")
        wait_for(lambda: _sessions(dovecot.imaps_port) >= WATCHERS, timeout=1800, interval=0.5,
                 what=f"{WATCHERS} IDLE sessions after the restart (now {_sessions(dovecot.imaps_port)})")
        rearmed_seconds = time.monotonic() - restarted
        time.sleep(5)
        after_sessions = _sessions(dovecot.imaps_port)
        assert idle.poll() is None, (logs / "idle.log").read_text()[-3000:]
        errors = [line for line in (logs / "idle.log").read_text(errors="replace").splitlines()
                  if "ERROR" in line or "Traceback" in line]
        assert not errors, errors[:20]
    finally:
        idle.terminate()
        try:
            idle.wait(30)
        except subprocess.TimeoutExpired:
            idle.kill()
            idle.wait()
        idle_log.close()
        vault.stop()
        dovecot.stop()
        if "rearmed_seconds" in locals():  # kept after a failure: dovecot.log says what Dovecot saw
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(logs, ignore_errors=True)
    def rss(usage):
        return f"{usage['rss_mib']:.0f}; {usage['rss_max_mib']:.0f}"

    per_watcher_kib = (held["rss_mib"] - baseline["rss_mib"]) * 1024 / WATCHERS
    record_benchmark("idle", f"""
## IDLE watchers at scale

One `idle` process (Celery's thread pool, concurrency {WATCHERS + 20}) holding {WATCHERS} IMAP IDLE sessions
over TLS to a local Dovecot, one mailbox (and one Dovecot user) per session, each queued as a
verified mailbox queues it (a vault lease from worker-vault, then `idle_watch`). Every watcher checks
every 5 s (AIEMAILY_IDLE_CHECK_SECONDS) that its mailbox is still connected; its database work waits
for one of {IDLE_DATABASE_TURNS} turns and closes its connection after (mail/tasks.py), so the process holds at most
{IDLE_DATABASE_TURNS} connections whatever the number of watchers. Baseline: the same process with no watcher, in the
same run.
Sessions counted as established TCP connections to Dovecot's IMAPS port.

| | no watcher (baseline) | {WATCHERS} watchers idling |
|---|---|---|
| CPU, % of one core ({BASELINE_SECONDS} s / {IDLE_SECONDS} s) | {baseline['cpu_pct']:.1f} | {held['cpu_pct']:.1f} |
| resident memory, MiB (mean; max) | {rss(baseline)} | {rss(held)} |
| threads | {baseline['threads']} | {held['threads']} |
| database connections of the app role (all processes) | {baseline_db} | {held_db} |
| IMAP sessions open | 0 | {held_sessions} |
| PostgreSQL CPU (all backends, the checks' connections included), % of one core | — | {postgres_pct:.1f} |

**{WATCHERS} sessions open {armed_seconds:.1f} s after queueing; {per_watcher_kib:.0f} KiB of resident
memory per watcher; {held['cpu_pct']:.1f} % of one core while idling. After a Dovecot restart all
{WATCHERS} were back in {rearmed_seconds:.1f} s** ({after_sessions} open 5 s later; the reconnect
pause is {BACKOFF_SECONDS} s, then a new lease each: one worker-vault process issues them one by one, which
sets the pace of both arming and re-arming on a busy machine). PostgreSQL's share is mostly the checks'
connection set-ups (a new backend per check on this direct connection; behind PgBouncer, as in
production, a check reuses a pooled server connection). Dovecot itself: {dovecot_rss:.0f} MiB resident
(summed over its processes, shared pages counted in each) for the {WATCHERS} sessions. Creating the
{WATCHERS} users and mailboxes took {setup_seconds:.0f} s (not timed above).
Reproduce: `make bench BENCH_ARGS="-k idle"` (or `make load`); AIEMAILY_BENCH_IDLE_WATCHERS=100 for a
smaller run.
""")
    print(f"armed {armed_seconds:.1f}s, cpu {held['cpu_pct']:.1f}%, rss {held['rss_mib']:.0f} MiB, "
          f"rearmed {rearmed_seconds:.1f}s, db {held_db}")
