"""The API contract holds under fuzzing: schemathesis against a live stack, on both databases.

Each case starts the site as `make run` does (gunicorn with the Procfile's options, a filesystem
broker in a temporary folder), on the embedded SQLite default or on a PostgreSQL database of its
own (migrated as the owning role, served as the app role, so RLS applies), seeds two users with
real data (scripts/fuzz_seed.py), and runs scripts/api_fuzz.py: every check including the stateful
phase and object_level_authorization, a fixed seed plus a random one it prints. 0 failures is the
bar. FUZZ_MAX_EXAMPLES (default 8 here) bounds the cases per operation, and so the run time;
FUZZ_SEED=N replays the one run of a printed seed.
"""

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from django.conf import settings
from psycopg import sql

from tests.conftest import OWNER_ROLE

ROOT = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = os.environ.get("FUZZ_MAX_EXAMPLES", "8")
# Settings the stack gets from testenv that must not leak into it: it picks its own.
DROPPED = ("DATABASE_URL", "DATABASE_MAINTENANCE_URL", "VAULT_DATABASE_URL", "KEYS_DATABASE_URL", "CELERY_BROKER_URL",
           "AIEMAILY_VAR_DIR", "AIEMAILY_PROCESS", "DJANGO_SETTINGS_MODULE", "PYTEST_XDIST_WORKER")


def _procfile_web_options() -> list[str]:
    """The gunicorn options of the Procfile's web line, so the fuzzed server is the shipped one."""
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    words = shlex.split(line.split(":", 1)[1])
    options = words[words.index("aiemaily.wsgi") + 1:]
    bind = options.index("--bind")
    del options[bind:bind + 2]
    return options


def _free_port() -> int:
    from tests.harness.system import free_port

    return free_port()


def _stack_env(tmp_path: Path, database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED}
    env.update(AIEMAILY_ENV="development", DEBUG="true", AIEMAILY_VAR_DIR=str(tmp_path / "var"),
               PYTHONPATH=str(ROOT), API_THROTTLE_ANON="100000/min", API_THROTTLE_USER="100000/min",
               API_THROTTLE_AUTH="100000/min", LOGIN_THROTTLE_IP_MAX_FAILURES="100000",
               LOGIN_THROTTLE_MAX_FAILURES="100000",  # fuzzed account deletions count against the account
               CACHE_KEY_PREFIX=f"fuzz-{uuid.uuid4().hex[:8]}")
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def _manage(env: dict, *args: str, process: str = "web") -> str:
    result = subprocess.run([sys.executable, *args], env=dict(env, AIEMAILY_PROCESS=process), cwd=ROOT,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


@pytest.fixture
def postgres_database(django_db_setup):
    """A database of its own (the roles exist once django_db_setup ran): the owner migrates it."""
    admin_url = os.environ["TEST_DATABASE_URL"]
    name = f"aiemaily_fuzz_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(admin_url)
    password = os.environ.get("AIEMAILY_TEST_ROLE_PASSWORD", "")
    secret = f":{password}" if password else ""

    def url(role):
        return f"postgresql://{role}{secret}@{parts.hostname}:{parts.port or 5432}/{name}"

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(OWNER_ROLE)))
    yield {"owner": url(OWNER_ROLE), "app": url(settings.AIEMAILY_DB_APP_ROLE),
           "maintenance": url(settings.AIEMAILY_DB_MAINTENANCE_ROLE)}
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _start_web(env: dict, port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "aiemaily.wsgi", "--bind", f"127.0.0.1:{port}", *_procfile_web_options()],
        env=dict(env, AIEMAILY_PROCESS="web"), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log.open("wb"),
        stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120  # start-up on two loaded cores
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):  # noqa: S310 - loopback
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise AssertionError(f"gunicorn did not start: {log.read_text()[-3000:]}")


@pytest.mark.claim("owner-scoping")  # object_level_authorization: what one user reads, the other never gets
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_api_holds_under_fuzzing_with_two_users(database, tmp_path, request):
    if database == "postgresql":
        urls = request.getfixturevalue("postgres_database")
        env = _stack_env(tmp_path, urls["app"])
        env["DATABASE_MAINTENANCE_URL"] = urls["maintenance"]
        _manage(dict(env, DATABASE_URL=urls["owner"], DATABASE_MAINTENANCE_URL=urls["owner"]),
                "manage.py", "migrate", "--noinput", "-v0")
    else:
        env = _stack_env(tmp_path, None)
        _manage(env, "manage.py", "migrate", "--noinput", "-v0")
    _manage(env, "manage.py", "migrate", "--database", "vault", "--noinput", "-v0", process="vault")
    # The storage-key store: the embedded default's own file, as under `make run`.
    _manage(env, "manage.py", "migrate", "--database", "keys", "--noinput", "-v0", process="sync")
    users = json.loads(_manage(env, "scripts/fuzz_seed.py", process="sync"))["users"]

    port, log = _free_port(), tmp_path / "web.log"
    web = _start_web(env, port, log)
    try:
        result = subprocess.run(
            [sys.executable, "scripts/api_fuzz.py", f"http://127.0.0.1:{port}", "--max-examples", MAX_EXAMPLES,
             *(["--seed", os.environ["FUZZ_SEED"]] if os.environ.get("FUZZ_SEED") else [])],
            env=dict(os.environ, FUZZ_USERS=json.dumps(users)), cwd=ROOT, capture_output=True, text=True,
            timeout=1200, check=False)
    finally:
        web.terminate()
        web.wait(30)
    print(result.stdout[-20000:])  # the seeds and schemathesis's summary, for the CI log
    server_log = log.read_text(errors="replace")
    assert result.returncode == 0, result.stdout[-15000:] + result.stderr[-3000:]
    assert "[fuzz] no failure" in result.stdout
    assert "Traceback" not in server_log, server_log[-5000:]
