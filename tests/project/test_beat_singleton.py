"""Beat is a singleton: with two real beat processes on one broker, every job is scheduled once; when
the active beat dies, the standby takes over within the lease time."""

import subprocess
import sys
import time

import pytest

from aiemaily.celery import app as celery_app
from aiemaily.ops.metrics import queue_depths
from tests.harness.processes import ROOT, role_env, wait_for

pytestmark = pytest.mark.django_db

INTERVAL = 1.0  # AIEMAILY_METRICS_SNAPSHOT_SECONDS: the job beat sends to the maintenance queue
LEASE = 3


def _beat(tmp_path, name: str) -> tuple[subprocess.Popen, object]:
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed by the test
    env = role_env("beat", extra={"AIEMAILY_METRICS_SNAPSHOT_SECONDS": str(int(INTERVAL)),
                                  "AIEMAILY_BEAT_LOCK_SECONDS": str(LEASE)})
    process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "aiemaily", "beat", "--loglevel", "INFO",
                                "--schedule", str(tmp_path / f"{name}-schedule")],
                               env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    return process, log


def _sent() -> int:
    return queue_depths()["maintenance"] or 0


def _purge():
    with celery_app.connection_for_write() as conn:
        conn.default_channel.queue_purge("maintenance")


def test_a_second_beat_stands_by_and_takes_over_when_the_first_dies(tmp_path):
    _purge()
    first, first_log = _beat(tmp_path, "first")
    second = second_log = None
    try:
        wait_for(lambda: _sent() >= 2, timeout=60, what="the first beat to schedule")
        second, second_log = _beat(tmp_path, "second")
        wait_for(lambda: b"standing by" in (tmp_path / "second.log").read_bytes(), timeout=60,
                 what="the second beat to stand by")
        start, window = _sent(), 8.0
        time.sleep(window)
        scheduled = _sent() - start
        # One beat sends one job per second; two would send about twice as many.
        assert window / INTERVAL - 2 <= scheduled <= window / INTERVAL + 2, scheduled

        first.kill()
        first.wait(10)
        before = _sent()
        wait_for(lambda: _sent() >= before + 3, timeout=LEASE * 3 + 30, what="the standby beat to take over")
        assert b"singleton lease taken" in (tmp_path / "second.log").read_bytes()
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)
        for log in (first_log, second_log):
            if log is not None:
                log.close()
        _purge()
