#!/usr/bin/env python3
"""`make test`: install the system packages the suite needs, start throwaway PostgreSQL and Redis,
run pytest against them, stop them.

Every Debian package the suite uses is listed once, in SYSTEM_PACKAGES (tests/harness/system.py, the
test harness's system helpers, with the PostgreSQL and Redis starters), and the missing ones
are installed with one apt-get call before pytest starts (as root; otherwise the run stops with the
command to type). Fixtures never install anything: they call `require_tool`, which only checks, so
parallel pytest workers never race for the dpkg lock.

Servers come from the system binaries, on free ports, in a temporary folder that is removed
afterwards. TEST_DATABASE_URL (a superuser URL) and TEST_REDIS_URL, when set, are used instead.
"""

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.system import install_system_packages, log, start_postgres, start_redis  # noqa: E402


def test_environment(tmp: Path, database_url: str, redis_url: str) -> dict[str, str]:
    from aiemaily.devkeys import ensure_dev_keys, ensure_dev_vault_keys

    keys = ensure_dev_keys(tmp / "keys")
    vault_keys = {name: str(path) for name, path in ensure_dev_vault_keys(tmp / "keys")["env"].items()}
    from urllib.parse import urlsplit

    db = urlsplit(database_url)
    host = f"{db.hostname}:{db.port or 5432}"
    redis = redis_url.rstrip("/")
    run_id = secrets.token_hex(4)
    return {
        "AIEMAILY_ENV": "test",
        "AIEMAILY_VAR_DIR": str(tmp / "var"),
        "TEST_DATABASE_URL": database_url,
        "TEST_REDIS_URL": redis_url,
        # conftest.py swaps in the per-worker database name; the roles are created there.
        "DATABASE_URL": f"postgresql://aiemaily_app@{host}/aiemaily_test",
        "DATABASE_MAINTENANCE_URL": f"postgresql://aiemaily_maintenance@{host}/aiemaily_test",
        "VAULT_DATABASE_URL": f"postgresql://aiemaily_app@{host}/aiemaily_test_vault",
        "KEYS_DATABASE_URL": f"postgresql://aiemaily_app@{host}/aiemaily_test_keys",
        # The pytest process plays every role; tests that prove isolation start real processes
        # (web, worker-vault, worker-sync) with only their own keys.
        "AIEMAILY_PROCESS": "test",
        **vault_keys,
        "AIEMAILY_STORAGE_KMS_LOCAL_DIR": str(tmp / "keys" / "storage-kek"),
        "CELERY_BROKER_URL": f"{redis}/2",
        "REDIS_URL": f"{redis}/1",
        "SECRET_KEY_FILE": str(keys["secret_key"]),
        "JWT_PRIVATE_KEY_FILE": str(keys["jwt_private"]),
        "JWT_PUBLIC_KEY_FILE": str(keys["jwt_public"]),
        "ALLOWED_HOSTS": "testserver,localhost,127.0.0.1",
        "AIEMAILY_SSL_REDIRECT": "false",
        # Every test client comes from 127.0.0.1: rate limits are tested explicitly, not by accident.
        "API_THROTTLE_ANON": "100000/min",
        "API_THROTTLE_USER": "100000/min",
        "API_THROTTLE_AUTH": "100000/min",
        "LOGIN_THROTTLE_IP_MAX_FAILURES": "100000",
        "AIEMAILY_TEST_RUN": run_id,
        "CACHE_KEY_PREFIX": f"test-{run_id}",
    }


def main(pytest_args: list[str]) -> int:
    install_system_packages()
    # AIEMAILY_TEST_DATABASE=sqlite: the embedded default of `make run` instead of PostgreSQL, for
    # the tests marked sqlite_smoke (`make test` runs them so after the PostgreSQL suite).
    sqlite = os.environ.get("AIEMAILY_TEST_DATABASE") == "sqlite"
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="aiemaily-test-"))
        tmp.chmod(0o755)
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        database_url = os.environ.get("TEST_DATABASE_URL") or ("" if sqlite else start_postgres(stack, tmp))
        redis_url = os.environ.get("TEST_REDIS_URL") or start_redis(stack, tmp)
        env = dict(os.environ)
        for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "SECRET_KEY", "DEBUG"):
            env.pop(name, None)
        env.update(test_environment(tmp, database_url, redis_url))
        if sqlite:
            for name in ("TEST_DATABASE_URL", "DATABASE_URL", "DATABASE_MAINTENANCE_URL", "VAULT_DATABASE_URL",
                         "KEYS_DATABASE_URL"):
                env.pop(name, None)
        elif not os.environ.get("TEST_DATABASE_URL"):
            # Our own cluster enforces it (pg_hba above); conftest gives the role this password.
            env["AIEMAILY_TEST_MAINTENANCE_PASSWORD"] = secrets.token_urlsafe(24)
        cmd = [sys.executable, "-m", "pytest", *pytest_args]
        log("running " + " ".join(cmd))
        return subprocess.run(cmd, env=env, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
