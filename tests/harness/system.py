"""System helpers of the test harness: the one list of Debian packages the suite and `make bench`
need, the check that a tool is installed (`require_tool`: fixtures only check, so parallel pytest
workers never race for the dpkg lock; scripts/testenv.py installs, once, before pytest starts), free
ports, and the throwaway PostgreSQL and Redis servers scripts/testenv.py starts.

Imports nothing from Django or the apps: scripts/testenv.py uses it before any settings exist.
"""

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

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


# Debian package -> the file that shows it is installed (a glob where the version is in the path).
# The one list of system packages the suite and `make bench` need; README "Tests" repeats it.
SYSTEM_PACKAGES = {
    "postgresql": "/usr/lib/postgresql/*/bin/initdb",   # the test database, pg_dump for the canary scan
    "pgbouncer": "/usr/sbin/pgbouncer",                 # transaction pooling in front of PostgreSQL
    "redis-server": "/usr/bin/redis-server",            # broker and cache
    "redis-tools": "/usr/bin/redis-cli",                # the canary scan reads every Redis key
    "dovecot-imapd": "/usr/sbin/dovecot",               # the real IMAP server
    "openssl": "/usr/bin/openssl",                      # TLS handshakes against nginx
    "nginx": "/usr/sbin/nginx",                         # the shipped TLS/reverse-proxy configuration
    "testssl.sh": "/usr/bin/testssl",                   # the TLS scan of that configuration
    "softhsm2": "/usr/lib/softhsm/libsofthsm2.so",      # the PKCS#11 KMS backend
    "chromium": "/usr/bin/chromium",                    # browser tests (CSP, SRI, forms)
    "isync": "/usr/bin/mbsync",                         # `make bench`: the IMAP sync baseline
    "rabbitmq-server": "/usr/lib/rabbitmq/bin/rabbitmq-server",  # `make prod-sim`'s broker, the fault tests
    "faketime": "/usr/lib/*/faketime/libfaketime.so.1",  # a worker with a skewed clock (libfaketime)
}


def _installed_path(package: str) -> str | None:
    matches = sorted(glob.glob(SYSTEM_PACKAGES[package]))
    return matches[-1] if matches else None


def missing_packages() -> list[str]:
    return [package for package in SYSTEM_PACKAGES if _installed_path(package) is None]


def install_system_packages() -> None:
    """One apt-get run for every missing package, before any test process exists."""
    missing = missing_packages()
    if not missing:
        return
    command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    if not IS_ROOT:
        sys.exit(f"missing system packages: {' '.join(missing)}\ninstall them first: sudo {' '.join(command)}")
    log(f"installing {' '.join(missing)} with apt-get (first run only; a few minutes)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # `update` may fail offline with a warm cache; the install below is what must succeed.
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    still = missing_packages()
    if still:
        sys.exit(f"apt-get finished but these are still missing: {' '.join(still)}")


def require_tool(package: str) -> str:
    """The installed file for `package` (see SYSTEM_PACKAGES); fails clearly instead of installing."""
    path = _installed_path(package)
    if path is None:
        raise RuntimeError(
            f"system package {package} is missing ({SYSTEM_PACKAGES[package]} not found): run the suite with "
            f"`make test`, which installs it, or `apt-get install {package}`"
        )
    return path


def pg_binary(name: str) -> str:
    globs = (f"/usr/lib/postgresql/*/bin/{name}",)
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


def init_postgres_cluster(tmp: Path, hba: str) -> Path:
    """A new cluster in tmp/pg with `hba` as its pg_hba.conf (shared with scripts/prodsim.py)."""
    data = tmp / "pg"
    data.mkdir()
    if IS_ROOT:
        shutil.chown(tmp, "postgres")
        shutil.chown(data, "postgres")
    subprocess.run(
        [pg_binary("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True, stdout=subprocess.DEVNULL, **as_postgres(),
    )
    (data / "pg_hba.conf").write_text(hba)
    return data


def start_postgres(stack: ExitStack, tmp: Path) -> str:
    postgres = pg_binary("postgres")
    # Like production: the BYPASSRLS maintenance role needs its own password over TCP, so a process
    # that was not given it cannot connect as that role (tests/project/test_maintenance_isolation.py).
    # Everyone else is trusted, as before.
    data = init_postgres_cluster(tmp, "local all all trust\n"
                                      "host all aiemaily_maintenance 127.0.0.1/32 scram-sha-256\n"
                                      "host all all 127.0.0.1/32 trust\n")
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
    server = require_tool("redis-server")
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    stack.callback(lambda: (process.terminate(), process.wait(30)))
    wait_for_port(port, process, "Redis")
    log(f"Redis on 127.0.0.1:{port}")
    return f"redis://127.0.0.1:{port}"
