#!/usr/bin/env python3
"""`make test`: start throwaway PostgreSQL and Redis, run pytest against them, stop them.

Servers come from the system binaries, on free ports, in a temporary folder that is removed
afterwards. Missing Debian packages are installed with apt-get when running as root.
TEST_DATABASE_URL (a superuser URL) and TEST_REDIS_URL, when set, are used instead.
"""

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IS_ROOT = os.geteuid() == 0


def log(message: str) -> None:
    print(f"[testenv] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_binary(name: str, extra_globs: tuple[str, ...] = ()) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for pattern in extra_globs:
        matches = sorted(glob.glob(pattern))
        if matches:
            return matches[-1]
    return None


def apt_install(*packages: str) -> None:
    if not IS_ROOT:
        sys.exit(f"missing system packages {', '.join(packages)}: install them (apt-get install ...)")
    log(f"installing {' '.join(packages)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], check=True, env=env)


def pg_binary(name: str) -> str:
    globs = (f"/usr/lib/postgresql/*/bin/{name}",)
    path = find_binary(name, globs)
    if path is None:
        apt_install("postgresql")
        path = find_binary(name, globs)
    if path is None:
        sys.exit(f"cannot find PostgreSQL's {name}")
    return path


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{what} exited with {process.returncode} before accepting connections")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} did not start within {timeout}s")


def as_postgres() -> dict:
    # initdb and postgres refuse to run as root: drop to the postgres user for them.
    return {"user": "postgres", "group": "postgres", "extra_groups": []} if IS_ROOT else {}


def start_postgres(stack: ExitStack, tmp: Path) -> str:
    initdb, postgres = pg_binary("initdb"), pg_binary("postgres")
    data = tmp / "pg"
    data.mkdir()
    if IS_ROOT:
        shutil.chown(tmp, "postgres")
        shutil.chown(data, "postgres")
    subprocess.run(
        [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True, stdout=subprocess.DEVNULL, **as_postgres(),
    )
    port = free_port()
    process = subprocess.Popen(
        [
            postgres, "-D", str(data), "-p", str(port), "-k", str(tmp),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off", "-c", "max_connections=200",
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp, **as_postgres(),
    )
    stack.callback(lambda: (process.send_signal(signal.SIGINT), process.wait(60)))
    wait_for_port(port, process, "PostgreSQL")
    log(f"PostgreSQL on 127.0.0.1:{port}")
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def start_redis(stack: ExitStack, tmp: Path) -> str:
    server = find_binary("redis-server")
    if server is None:
        apt_install("redis-server")
        server = find_binary("redis-server")
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    stack.callback(lambda: (process.terminate(), process.wait(30)))
    wait_for_port(port, process, "Redis")
    log(f"Redis on 127.0.0.1:{port}")
    return f"redis://127.0.0.1:{port}"


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
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="aiemaily-test-"))
        tmp.chmod(0o755)
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        database_url = os.environ.get("TEST_DATABASE_URL") or start_postgres(stack, tmp)
        redis_url = os.environ.get("TEST_REDIS_URL") or start_redis(stack, tmp)
        env = dict(os.environ)
        for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "SECRET_KEY", "DEBUG"):
            env.pop(name, None)
        env.update(test_environment(tmp, database_url, redis_url))
        cmd = [sys.executable, "-m", "pytest", *pytest_args]
        log("running " + " ".join(cmd))
        return subprocess.run(cmd, env=env, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
