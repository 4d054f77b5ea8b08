"""Real processes for tests: each role (web, worker-vault, worker-sync) with only its own keys.

The pytest process plays every role for speed; these helpers start the real thing when a test must
prove what a process can and cannot do, or must go through the broker.
"""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connections

ROOT = Path(__file__).resolve().parents[2]  # the repository

# Keys each role may hold. Everything else secret is removed from the child's environment.
ROLE_SECRETS = {
    "web": {"JWT_PRIVATE_KEY_FILE", "AIEMAILY_STORAGE_KMS_LOCAL_DIR", "KEYS_DATABASE_URL"},
    "vault": {"AIEMAILY_VAULT_PRIVATE_KEY_FILE", "AIEMAILY_KMS_LOCAL_DIR", "VAULT_DATABASE_URL",
              "GOOGLE_OAUTH_CLIENT_SECRET", "MICROSOFT_CLIENT_SECRET"},
    "sync": {"AIEMAILY_SYNC_PRIVATE_KEY_FILE", "AIEMAILY_STORAGE_KMS_LOCAL_DIR", "KEYS_DATABASE_URL"},
    "idle": {"AIEMAILY_SYNC_PRIVATE_KEY_FILE", "AIEMAILY_STORAGE_KMS_LOCAL_DIR", "KEYS_DATABASE_URL"},
    "ai": {"AIEMAILY_AI_PRIVATE_KEY_FILE", "AIEMAILY_STORAGE_KMS_LOCAL_DIR", "AIEMAILY_AI_PLATFORM_KEY",
           "KEYS_DATABASE_URL"},
    # The BYPASSRLS maintenance role's credential: only the processes that parse no user input.
    "maintenance": {"DATABASE_MAINTENANCE_URL"},
    "admin": {"DATABASE_MAINTENANCE_URL"},
    "beat": set(),
}
ALL_ROLE_SECRETS = set().union(*ROLE_SECRETS.values()) | {"AIEMAILY_TEST_MAINTENANCE_PASSWORD"}


def _url(alias: str) -> str:
    s = connections[alias].settings_dict
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"postgresql://{s['USER']}{password}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


def role_env(role: str, *, production: bool = False, extra: dict | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ALL_ROLE_SECRETS or k in ROLE_SECRETS[role]}
    env.update(
        AIEMAILY_PROCESS=role,
        DATABASE_URL=_url("default"),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        PYTHONPATH=str(ROOT),
    )
    if "DATABASE_MAINTENANCE_URL" in ROLE_SECRETS[role]:
        env["DATABASE_MAINTENANCE_URL"] = _url("maintenance")
    if role == "vault":
        env["VAULT_DATABASE_URL"] = _url("vault")
    if "KEYS_DATABASE_URL" in ROLE_SECRETS[role]:
        env["KEYS_DATABASE_URL"] = _url("keys")
    if production:
        env["AIEMAILY_ENV"] = "production"
    env.update(extra or {})
    return env


def run_as(role: str, code: str, *, production: bool = False, timeout: float = 60,
           extra_env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=role_env(role, production=production, extra=extra_env),
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def skewed_clock(offset: str | None = None, *, timestamp_file: Path | None = None) -> dict[str, str]:
    """Environment for a child whose wall clock is off by `offset` ("-1h", "+2d": libfaketime), or
    follows what `timestamp_file` holds at each reading (a clock that steps while the process runs).

    With a fixed offset libfaketime moves CLOCK_MONOTONIC by the same constant (durations unchanged).
    A stepping clock leaves CLOCK_MONOTONIC alone, as an NTP step does; time.sleep() then fails
    with EINVAL under libfaketime 0.9.10, so such a child waits with threading.Event().wait()."""
    from tests.harness.system import require_tool

    env = {"LD_PRELOAD": require_tool("faketime")}
    if timestamp_file is not None:
        env.update(FAKETIME_TIMESTAMP_FILE=str(timestamp_file), FAKETIME_NO_CACHE="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
    else:
        env["FAKETIME"] = offset
    return env


class Worker:
    """`celery -A aiemaily worker -Q <queue>` as a child process, its log kept for inspection."""

    def __init__(self, role: str, queue: str, log_path: Path, extra_env: dict | None = None, processes: int = 1):
        """One process (`-P solo`), or `processes` child processes (prefork, as the Procfile runs worker-sync)."""
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        pool = ["-P", "solo"] if processes == 1 else ["-P", "prefork", "--concurrency", str(processes)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "aiemaily", "worker", "-Q", queue, "-n", f"{role}-{os.getpid()}@%h",
             *pool, "--without-mingle", "--without-gossip", "--without-heartbeat", "--loglevel", "INFO"],
            env=role_env(role, extra=extra_env), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120) -> None:
        # Start-up, not behaviour: on two busy cores (the whole suite under xdist) a worker's imports
        # alone took over 30 s, so the wait is generous; a worker that never gets ready still fails.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-2000:]}")
            if b"ready." in self.log_path.read_bytes():
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def mail_worker_env(test_ca) -> dict:
    """What a worker needs to reach the local Dovecot and SMTP servers: the test CA, and localhost allowed."""
    return {"AIEMAILY_MAIL_CA_BUNDLE": str(test_ca.ca_file), "AIEMAILY_ALLOWED_PRIVATE_HOSTS": "127.0.0.1,localhost"}


@contextmanager
def running_workers(tmp_path: Path, roles: tuple[str, ...], extra_env: dict | None = None) -> Iterator[list[Worker]]:
    """One real worker per role (each on the queue of its name), all ready before the body runs and
    stopped after it, whatever happens."""
    started = [Worker(role, role, tmp_path / f"{role}.log", extra_env) for role in roles]
    try:
        for worker in started:
            worker.wait_ready()
        yield started
    finally:
        for worker in started:
            worker.stop()


def wait_for(predicate, timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
