"""A worker whose clock is wrong gets no more time than it is due: leases, key caches, the beat lease.

Real processes with a skewed wall clock (libfaketime, Debian's `faketime`), against the real
PostgreSQL and Redis. A vault lease is issued and checked on the database server's clock
(aiemaily/ops/clock.py), the DEK and storage-key caches age on time.monotonic(), and beat's
singleton lease is a TTL kept by Redis, so no process's own clock can extend any of them.
"""

import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta

import pytest

from aiemaily.ops.clock import database_now
from secrets_vault.sealing import lease_seal
from tests.harness.processes import ROOT, role_env, run_as, skewed_clock, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.django_db]

CANARY = "Canary-Clock-Skew-57"
HOUR = timedelta(hours=1)
BEAT_CACHE_PREFIX = f"clock-skew-{uuid.uuid4().hex[:12]}"

OPEN = """
import json, django
django.setup()
from datetime import UTC, datetime
from secrets_vault.sealing import LeaseError, lease_open
lease = json.loads(%(lease)r)
result = {"clock": datetime.now(UTC).isoformat()}
try:
    result["opened"] = lease_open(lease, owner_id=lease["owner_id"], connection_id=lease["connection_id"],
                                  purpose=lease["purpose"]).reveal()
except LeaseError as exc:
    result["refused"] = str(exc)
print("RESULT" + json.dumps(result))
"""

SEAL = """
import json, django
django.setup()
from datetime import UTC, datetime
from secrets_vault.sealing import lease_seal
lease = lease_seal(b"x", owner_id="o", connection_id="c", purpose="imap_password", ttl_seconds=%(ttl)d)
print("RESULT" + json.dumps({"clock": datetime.now(UTC).isoformat(), "expires_at": lease.expires_at}))
"""

# The wall clock steps back an hour while a key is cached (an NTP step, a VM restored from a snapshot).
CACHES = """
import json, os, pathlib, threading, time, django
django.setup()
from %(module)s import %(cache)s as cache
cache.put("owner", 1, b"k" * 32)
before = time.time()
pathlib.Path(os.environ["FAKETIME_TIMESTAMP_FILE"]).write_text("-1h\\n")
stepped = before - time.time()
threading.Event().wait(1.5)
print("RESULT" + json.dumps({"stepped": stepped, "still_cached": cache.get("owner", 1) is not None}))
"""


def _result(completed: subprocess.CompletedProcess) -> dict:
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def _clock_offset(result: dict) -> timedelta:
    """How far the child's wall clock was from the database's (proves libfaketime took hold)."""
    return datetime.fromisoformat(result["clock"]) - database_now()


def _lease(ttl_seconds: int) -> dict:
    return lease_seal(CANARY.encode(), owner_id=str(uuid.uuid4()), connection_id=str(uuid.uuid4()),
                      purpose="imap_password", ttl_seconds=ttl_seconds).as_message()


def test_a_worker_whose_clock_runs_an_hour_behind_cannot_open_an_expired_lease():
    lease = _lease(ttl_seconds=1)
    wait_for(lambda: database_now() > datetime.fromisoformat(lease["expires_at"]), timeout=10,
             what="the lease to expire")
    result = _result(run_as("sync", OPEN % {"lease": json.dumps(lease)}, extra_env=skewed_clock("-1h")))
    assert abs(_clock_offset(result) + HOUR) < timedelta(minutes=5), result["clock"]
    # By its own clock the lease has 59 minutes left; by the database's it is over.
    assert result == {"clock": result["clock"], "refused": "lease expired"}


def test_a_worker_whose_clock_runs_an_hour_ahead_still_opens_a_fresh_lease():
    lease = _lease(ttl_seconds=300)
    result = _result(run_as("sync", OPEN % {"lease": json.dumps(lease)}, extra_env=skewed_clock("+1h")))
    assert abs(_clock_offset(result) - HOUR) < timedelta(minutes=5), result["clock"]
    assert result.get("opened") == CANARY, result


@pytest.mark.parametrize("offset", ["+1h", "-1h"])
def test_a_vault_whose_clock_is_off_issues_leases_that_end_on_the_database_clock(offset):
    result = _result(run_as("vault", SEAL % {"ttl": 600}, extra_env=skewed_clock(offset)))
    assert abs(abs(_clock_offset(result)) - HOUR) < timedelta(minutes=5), result["clock"]
    # Ten minutes from the database's now (less the seconds the child took to exit), not 70 or -50.
    ends_in = datetime.fromisoformat(result["expires_at"]) - database_now()
    assert timedelta(minutes=9) < ends_in <= timedelta(minutes=10), ends_in


@pytest.mark.parametrize(("role", "module", "cache", "setting"), [
    ("vault", "secrets_vault.keystore", "dek_cache", "AIEMAILY_DEK_CACHE_SECONDS"),
    ("sync", "mail.blobstore", "key_cache", "AIEMAILY_STORAGE_KEY_CACHE_SECONDS"),
])
def test_a_cached_key_expires_on_time_when_the_wall_clock_steps_back(tmp_path, role, module, cache, setting):
    clock = tmp_path / "clock"
    clock.write_text("+0\n")
    result = _result(run_as(role, CACHES % {"module": module, "cache": cache},
                            extra_env={setting: "1", **skewed_clock(timestamp_file=clock)}))
    assert result["stepped"] > 3500, result  # the step happened
    assert result == {"stepped": result["stepped"], "still_cached": False}


def _beat(tmp_path, name: str, lease_seconds: int, extra_env: dict | None = None) -> subprocess.Popen:
    # The lease key under a prefix of this test's own: the cache Redis is shared by every xdist worker,
    # and tests/project/test_beat_singleton.py's beats may be running on another one.
    env = role_env("beat", extra={"AIEMAILY_BEAT_LOCK_SECONDS": str(lease_seconds),
                                  "CACHE_KEY_PREFIX": BEAT_CACHE_PREFIX, **(extra_env or {})})
    with open(tmp_path / f"{name}.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "celery", "-A", "aiemaily", "beat", "--loglevel", "INFO",
                                 "--schedule", str(tmp_path / f"{name}-schedule")],
                                env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def test_a_beat_whose_clock_runs_behind_loses_its_lease_when_paused_past_the_ttl(tmp_path):
    """The holder's clock is an hour behind; stopped (SIGSTOP) longer than the lease, the lease still
    ends on Redis's clock: the standby takes over, and the resumed holder stops instead of scheduling."""
    import signal

    lease = 3
    skewed = _beat(tmp_path, "skewed", lease, skewed_clock("-1h"))
    standby = None
    try:
        wait_for(lambda: b"singleton lease taken" in (tmp_path / "skewed.log").read_bytes(), timeout=60,
                 what="the skewed beat to take the lease")
        standby = _beat(tmp_path, "standby", lease)
        wait_for(lambda: b"standing by" in (tmp_path / "standby.log").read_bytes(), timeout=60,
                 what="the second beat to stand by")
        skewed.send_signal(signal.SIGSTOP)
        wait_for(lambda: b"singleton lease taken" in (tmp_path / "standby.log").read_bytes(), timeout=lease * 3 + 10,
                 what="the standby to take over after one lease time")
        skewed.send_signal(signal.SIGCONT)
        assert skewed.wait(lease * 3 + 10) == 3, (tmp_path / "skewed.log").read_text()[-2000:]
        assert b"lease was lost" in (tmp_path / "skewed.log").read_bytes()
        assert standby.poll() is None
    finally:
        for process in (skewed, standby):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait(10)

