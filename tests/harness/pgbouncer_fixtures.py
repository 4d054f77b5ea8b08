"""PgBouncer in transaction pooling mode in front of the test PostgreSQL, on a free port."""

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connections

from tests.harness.system import free_port, require_tool

IS_ROOT = os.geteuid() == 0


@contextmanager
def running_pgbouncer(*, pool_size: int = 1) -> Iterator[int]:
    """Yields the port. pool_size=1 makes every client share one server connection per database and
    user, so whatever a transaction leaves on its connection would be seen by the next client."""
    binary = require_tool("pgbouncer")
    target = connections["default"].settings_dict
    folder = Path(tempfile.mkdtemp(prefix="aiemaily-pgbouncer-"))
    port = free_port()
    roles = {connections[a].settings_dict["USER"] for a in ("default", "maintenance")}
    (folder / "users.txt").write_text("".join(f'"{role}" ""\n' for role in sorted(roles)))
    (folder / "pgbouncer.ini").write_text(f"""[databases]
* = host={target['HOST']} port={target['PORT']}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / 'users.txt'}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 100
ignore_startup_parameters = extra_float_digits,options
logfile = {folder / 'pgbouncer.log'}
pidfile = {folder / 'pgbouncer.pid'}
""")
    if IS_ROOT:  # pgbouncer refuses to run as root
        shutil.chown(folder, "postgres")
        for child in folder.iterdir():
            shutil.chown(child, "postgres")
    process = subprocess.Popen([binary, str(folder / "pgbouncer.ini")], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               **({"user": "postgres", "group": "postgres", "extra_groups": []} if IS_ROOT else {}))
    try:
        import socket

        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                log = (folder / "pgbouncer.log").read_text() if (folder / "pgbouncer.log").exists() else ""
                raise RuntimeError(f"pgbouncer exited: {log[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("pgbouncer did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(15)
        shutil.rmtree(folder, ignore_errors=True)


def bouncer_url(port: int, alias: str = "default") -> str:
    s = connections[alias].settings_dict
    return f"postgresql://{s['USER']}@127.0.0.1:{port}/{s['NAME']}"
