#!/usr/bin/env python3
"""`make prod-sim`: the production topology on this machine, with production settings, in one command.

    PostgreSQL (three databases, three roles, passwords over TCP)
      <- PgBouncer (transaction pooling, DATABASE_PGBOUNCER=true)
    RabbitMQ (the Celery broker)           Redis (cache, throttles, the beat lease)
    moto server (S3 for bodies, KMS for the storage key)     SoftHSM2 (the vault KEK, pkcs11)
    nginx (TLS, deploy/nginx/aiemaily.conf) -> two gunicorn web processes
    worker-sync x2, worker-vault, idle, worker-ai, worker-maintenance, beat

Every process runs with AIEMAILY_ENV=production and only its own zone's environment, as
deploy/env/*.env.example lays out (ZONE_ENV below mirrors them). The database is set up the way
docs/operations.md says an operator does it (db_roles, migrate x3, vault_rotate_kek --init,
storage_kms_rotate --init). It prints the URL and stops everything on Ctrl-C.

tests/test_prod_sim.py drives the same class (ProdSim) and injects faults: each server is a
`Service` that can be stopped, killed and started again on the same port and data.
The servers come from the test harness's starters (scripts/testenv.py, tests/tls_fixtures.py,
tests/kms_fixtures.py, tests/mailservers.py), not copies of them.
"""

from __future__ import annotations

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

from tests.harness.system import IS_ROOT, as_postgres, free_port, init_postgres_cluster, pg_binary, require_tool  # noqa: E402

OWNER_ROLE = "aiemaily_owner"
APP_ROLE = "aiemaily_app"
MAINTENANCE_ROLE = "aiemaily_maintenance"
DATABASES = {"main": "aiemaily", "vault": "aiemaily_vault", "keys": "aiemaily_keys"}
STORAGE_KEY_ALIAS = "alias/aiemaily-storage"
BUCKET = "aiemaily-objects"


def log(message: str) -> None:
    print(f"[prod-sim] {message}", flush=True)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Service:
    """One server or worker process, restartable on the same port and data, its output in a log file.

    Started in its own session so a stop or SIGKILL reaches the whole process group (a Celery
    worker's pool children, RabbitMQ's Erlang VM) and nothing outlives it."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], logs: Path, port: int | None = None,
                 ready_text: str | None = None, cwd: Path = ROOT, stop_signal: int = signal.SIGTERM,
                 popen_kwargs: dict | None = None, start_timeout: float = 180):
        self.name, self.argv, self.env, self.port, self.ready_text = name, argv, env, port, ready_text
        self.cwd, self.stop_signal, self.popen_kwargs = cwd, stop_signal, popen_kwargs or {}
        self.log_path = logs / f"{name}.log"
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        self._log_offset = 0

    def start(self, *, wait: bool = True) -> Service:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                                            **self.popen_kwargs)
        if wait:
            self.wait_ready()
        return self

    def mark(self) -> None:
        """From now on, output(since_start=True) starts here (a test reads what one step logged)."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0

    def output(self, since_start: bool = False) -> str:
        if not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()
        return data[self._log_offset:].decode(errors="replace") if since_start else data.decode(errors="replace")

    def wait_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n"
                                   f"{self.output(since_start=True)[-3000:]}")
            port_ok = self.port is None or port_open(self.port)
            text_ok = self.ready_text is None or self.ready_text in self.output(since_start=True)
            if port_ok and text_ok:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready within the time allowed:\n{self.output(since_start=True)[-3000:]}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 30) -> None:
        if not self.running:
            return
        self._signal_group(self.stop_signal)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait(10)
        self._wait_port_closed()

    def kill(self) -> None:
        """SIGKILL to the process and its children: no clean-up, no acknowledgement, as a crash."""
        if self.running:
            self._signal_group(signal.SIGKILL)
            self.process.wait(10)
        self._wait_port_closed()

    def _wait_port_closed(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.port is not None and port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def reload(self) -> None:
        """SIGHUP to the main process only (nginx re-reads its configuration, replaces its workers)."""
        if self.running:
            self.process.send_signal(signal.SIGHUP)

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()


class Gate:
    """A TCP relay in front of one server: close() makes the server unreachable (connections refused,
    open ones cut) without losing its state, open() brings it back on the same port. moto keeps its
    KMS keys in memory, so "KMS down" must be a network fault, not a restart."""

    def __init__(self, target_port: int):
        import threading

        self.target_port, self.port = target_port, free_port()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open_sockets: set[socket.socket] = set()
        self.open()

    def open(self) -> None:
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            for sock in list(self._open_sockets):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._open_sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open_sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                self._open_sockets.discard(source)


class ProdSim:
    """The whole topology under `root`. start() brings it up; stop() takes it down (idempotent)."""

    def __init__(self, root: Path, *, sync_workers: int = 2, web_processes: int = 2):
        self.root = root
        root.chmod(0o755)  # nginx, Dovecot and PostgreSQL run as their own users and must enter it
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.sync_workers, self.web_processes = sync_workers, web_processes
        self.stack = ExitStack()
        self.services: dict[str, Service] = {}
        self.passwords = {APP_ROLE: secrets.token_urlsafe(18), MAINTENANCE_ROLE: secrets.token_urlsafe(18)}
        self.ports = {name: free_port() for name in ("postgres", "pgbouncer", "redis", "amqp", "amqp_dist", "epmd",
                                                     "moto")}
        self.web_ports = [free_port() for _ in range(web_processes)]
        self.url = ""
        self.ca = None
        self.dovecot = None

    # --- helpers ------------------------------------------------------------------------------
    def _add(self, service: Service, *, wait: bool = True) -> Service:
        self.services[service.name] = service
        service.start(wait=wait)
        return service

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    def db_url(self, role: str, database: str = "main", *, direct: bool = False) -> str:
        port = self.ports["postgres"] if direct else self.ports["pgbouncer"]
        password = self.passwords.get(role)
        auth = f"{role}:{password}" if password else role
        return f"postgresql://{auth}@127.0.0.1:{port}/{DATABASES[database]}"

    # --- servers ------------------------------------------------------------------------------
    def _start_postgres(self) -> None:
        # Passwords over TCP for the app and maintenance roles, as in production; the superuser and
        # the owning role (migrations, set-up) only from this machine.
        data = init_postgres_cluster(self.root, (
            "local all all trust\n"
            f"host all postgres 127.0.0.1/32 trust\nhost all {OWNER_ROLE} 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"))
        if IS_ROOT:
            shutil.chown(self.logs, "postgres")
        self._add(Service("postgres", [pg_binary("postgres"), "-D", str(data), "-p", str(self.ports["postgres"]),
                                       "-k", str(self.root), "-c", "listen_addresses=127.0.0.1",
                                       "-c", "fsync=off", "-c", "max_connections=300"],
                          env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}, logs=self.logs,
                          port=self.ports["postgres"], stop_signal=signal.SIGINT, cwd=self.root,
                          popen_kwargs=as_postgres()))
        # Start-up, not behaviour: the port opens a moment before the cluster accepts logins.
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.db_url("postgres", direct=True).replace("/aiemaily", "/postgres")).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _start_pgbouncer(self) -> None:
        folder = self.root / "pgbouncer"
        folder.mkdir()
        (folder / "users.txt").write_text("".join(f'"{role}" "{password}"\n'
                                                  for role, password in self.passwords.items()))
        (folder / "pgbouncer.ini").write_text(f"""[databases]
* = host=127.0.0.1 port={self.ports['postgres']}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.ports['pgbouncer']}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {folder / 'users.txt'}
pool_mode = transaction
default_pool_size = 20
max_client_conn = 500
server_login_retry = 1
ignore_startup_parameters = extra_float_digits,options
""")
        (folder / "users.txt").chmod(0o600)
        if IS_ROOT:  # pgbouncer refuses to run as root
            for path in (folder, folder / "users.txt", folder / "pgbouncer.ini"):
                shutil.chown(path, "postgres")
        self._add(Service("pgbouncer", [require_tool("pgbouncer"), str(folder / "pgbouncer.ini")],
                          env={"PATH": os.environ["PATH"]}, logs=self.logs, port=self.ports["pgbouncer"],
                          cwd=folder, popen_kwargs=as_postgres()))

    def _start_redis(self) -> None:
        folder = self.root / "redis"
        folder.mkdir()
        self._add(Service("redis", [require_tool("redis-server"), "--port", str(self.ports["redis"]),
                                    "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
                          env={"PATH": os.environ["PATH"]}, logs=self.logs, port=self.ports["redis"]))

    def _start_rabbitmq(self) -> None:
        """RabbitMQ from the Debian package as our own node: own ports, own epmd, own data folder."""
        server = require_tool("rabbitmq-server")
        folder = self.root / "rabbitmq"
        folder.mkdir()
        (folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.ports['amqp']}\n"
            "loopback_users = none\n"
            # Celery tasks (an initial sync) may run longer than the default 30 minutes.
            "consumer_timeout = 7200000\n")
        (folder / "enabled_plugins").write_text("[].\n")
        env = {"PATH": os.environ["PATH"], "HOME": str(folder), "LANG": "C.UTF-8",
               "RABBITMQ_NODENAME": f"aiemaily-{self.ports['amqp']}@localhost",
               "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(self.ports["amqp"]),
               "RABBITMQ_DIST_PORT": str(self.ports["amqp_dist"]), "ERL_EPMD_PORT": str(self.ports["epmd"]),
               "ERL_EPMD_ADDRESS": "127.0.0.1",
               "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"), "RABBITMQ_LOG_BASE": str(folder / "log"),
               "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq.conf"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
               "RABBITMQ_PID_FILE": str(folder / "rabbitmq.pid"), "RABBITMQ_LOGS": "-"}
        epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        self._add(Service("epmd", [epmd, "-port", str(self.ports["epmd"]), "-address", "127.0.0.1"], env=env,
                          logs=self.logs, port=self.ports["epmd"]))
        # The Debian wrapper (/usr/sbin/rabbitmq-server) switches to the rabbitmq user and its fixed
        # folders; the real script under /usr/lib/rabbitmq takes our environment.
        real = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
        self._add(Service("rabbitmq", [str(real if real.exists() else server)], env=env, logs=self.logs,
                          port=self.ports["amqp"], ready_text="Server startup complete", cwd=folder,
                          start_timeout=120))

    def _start_moto(self) -> None:
        self._add(Service("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                   str(self.ports["moto"])],
                          env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}, logs=self.logs,
                          port=self.ports["moto"]))

        # The KMS endpoint goes through a gate the fault tests can close (S3 is reached directly).
        self.kms_gate = Gate(self.ports["moto"])
        self.stack.callback(self.kms_gate.close)

    @property
    def moto_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['moto']}"

    @property
    def kms_url(self) -> str:
        return f"http://127.0.0.1:{self.kms_gate.port}"

    def _start_softhsm(self) -> None:
        from tests.harness.kms_fixtures import softhsm_token

        self.hsm = self.stack.enter_context(softhsm_token(self.root / "softhsm", label="aiemaily-prodsim",
                                                          user_pin=secrets.token_hex(8)))
        (self.root / "secrets").mkdir(exist_ok=True)
        (self.root / "secrets" / "pkcs11-pin").write_text(self.hsm.user_pin)

    def _start_mail(self) -> None:
        """A local Dovecot to connect as a mailbox (its TLS certificate from the same test CA)."""
        from tests.harness.mailservers import Dovecot, TestCA

        self.ca = TestCA(self.root / "ca")
        self.root.chmod(0o755)
        (self.root / "ca").chmod(0o755)
        self.dovecot = Dovecot(self.root / "dovecot", self.ca)
        self.stack.callback(self.dovecot.stop)
        from tests.harness.mailservers import SmtpServer

        self.smtp = SmtpServer(self.ca)
        self.stack.callback(self.smtp.stop)

    def add_mailbox(self) -> tuple[str, str]:
        """A fresh IMAP user on the local Dovecot, with the same login on the SMTP server."""
        user, password = self.dovecot.add_user()
        self.smtp.add_user(user, password)
        return user, password

    # --- environments -------------------------------------------------------------------------
    def _keys(self) -> None:
        from aiemaily.devkeys import ensure_dev_keys, ensure_dev_vault_keys

        key_dir = self.root / "secrets"
        key_dir.mkdir(exist_ok=True)
        self.key_files = {name: str(path) for name, path in ensure_dev_keys(key_dir).items()}
        self.vault_key_env = {name: str(path) for name, path in ensure_dev_vault_keys(key_dir)["env"].items()}

    def common_env(self) -> dict[str, str]:
        """deploy/env/common.env.example, with this machine's addresses."""
        public = {name: path for name, path in self.vault_key_env.items() if "_PUBLIC_KEY" in name}
        return {
            "PATH": os.environ["PATH"], "LANG": "C.UTF-8", "PYTHONPATH": str(ROOT), "HOME": str(self.root),
            "AIEMAILY_ENV": "production",
            "SITE_URL": self.url, "ALLOWED_HOSTS": "localhost,127.0.0.1",
            "CSRF_TRUSTED_ORIGINS": self.url,  # the browser's origin carries nginx's port; Host does not
            "AIEMAILY_BEHIND_PROXY": "true",
            "DATABASE_URL": self.db_url(APP_ROLE), "DATABASE_PGBOUNCER": "true",
            "CELERY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{self.ports['amqp']}//",
            "REDIS_URL": f"redis://127.0.0.1:{self.ports['redis']}/1",
            "SECRET_KEY_FILE": self.key_files["secret_key"],
            "JWT_PUBLIC_KEY_FILE": self.key_files["jwt_public"],
            **public,
            "AIEMAILY_STORAGE": "s3", "AIEMAILY_S3_BUCKET": BUCKET, "AIEMAILY_S3_ENDPOINT": self.moto_url,
            "STATIC_ROOT": str(self.root / "static"),
            "AIEMAILY_VAR_DIR": str(self.root / "var"),
            "LOG_FORMAT": "json",
            # No SMTP relay here: the verification mail goes to web's log.
            "EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend",
            # The local Dovecot is a mailbox on this machine, trusted through the test CA.
            "AIEMAILY_ALLOWED_PRIVATE_HOSTS": "127.0.0.1,localhost",
            "AIEMAILY_MAIL_CA_BUNDLE": str(self.ca.ca_file),
            "AIEMAILY_READYZ_CACHE_SECONDS": "1",
        }

    def _storage_kms_env(self) -> dict[str, str]:
        # moto accepts any credentials; they stand for the mail zones' own IAM role.
        return {"AIEMAILY_STORAGE_KMS": "aws", "AIEMAILY_STORAGE_AWS_KMS_KEY_ID": STORAGE_KEY_ALIAS,
                "AIEMAILY_AWS_KMS_ENDPOINT": self.kms_url, "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "prodsim", "AWS_SECRET_ACCESS_KEY": "prodsim",
                "KEYS_DATABASE_URL": self.db_url(APP_ROLE, "keys")}

    def zone_env(self, zone: str) -> dict[str, str]:
        """deploy/env/<zone>.env.example on top of common: each zone gets only its own secrets."""
        env = {**self.common_env(), "AIEMAILY_PROCESS": zone}
        v = self.vault_key_env
        if zone == "web":
            env.update(JWT_PRIVATE_KEY_FILE=self.key_files["jwt_private"], **self._storage_kms_env())
        elif zone == "vault":
            env.update(VAULT_DATABASE_URL=self.db_url(APP_ROLE, "vault"),
                       AIEMAILY_VAULT_PRIVATE_KEY_FILE=v["AIEMAILY_VAULT_PRIVATE_KEY_FILE"],
                       AIEMAILY_KMS="pkcs11", AIEMAILY_PKCS11_MODULE=self.hsm.module,
                       AIEMAILY_PKCS11_TOKEN=self.hsm.token_label,
                       AIEMAILY_PKCS11_PIN_FILE=str(self.root / "secrets" / "pkcs11-pin"),
                       SOFTHSM2_CONF=str(self.hsm.conf))
        elif zone in ("sync", "idle"):
            env.update(AIEMAILY_SYNC_PRIVATE_KEY_FILE=v["AIEMAILY_SYNC_PRIVATE_KEY_FILE"], **self._storage_kms_env())
        elif zone == "ai":
            env.update(AIEMAILY_AI_PRIVATE_KEY_FILE=v["AIEMAILY_AI_PRIVATE_KEY_FILE"], **self._storage_kms_env())
        elif zone in ("maintenance", "admin"):
            env.update(DATABASE_MAINTENANCE_URL=self.db_url(MAINTENANCE_ROLE))
        elif zone != "beat":
            raise ValueError(zone)
        return env

    def manage(self, zone: str, *args: str, env: dict | None = None, timeout: float = 600) -> str:
        result = subprocess.run([sys.executable, "manage.py", *args], env={**self.zone_env(zone), **(env or {})},
                                cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} ({zone}) failed:\n{result.stderr[-3000:]}")
        return result.stdout

    # --- set-up as an operator does it (docs/operations.md "Deploying") --------------------------
    def _set_up_database(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.db_url("postgres", direct=True).replace("/aiemaily", "/postgres"),
                             autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER CREATEROLE NOBYPASSRLS").format(
                sql.Identifier(OWNER_ROLE)))
            for name in DATABASES.values():
                admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name),
                                                                           sql.Identifier(OWNER_ROLE)))
        files = {}
        for role, password in self.passwords.items():
            files[role] = self.root / "secrets" / f"db-{role}"
            files[role].write_text(password)
        owner = {"DATABASE_URL": self.db_url(OWNER_ROLE, direct=True), "DATABASE_PGBOUNCER": "false"}
        # db_roles runs "as a superuser" (docs/operations.md): only one may create a BYPASSRLS role.
        # The owner is one for that command only and owns the tables without it afterwards.
        with psycopg.connect(self.db_url("postgres", direct=True).replace("/aiemaily", "/postgres"),
                             autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER ROLE {} SUPERUSER").format(sql.Identifier(OWNER_ROLE)))
            self.manage("web", "db_roles", "--password-file", str(files[APP_ROLE]),
                        "--maintenance-password-file", str(files[MAINTENANCE_ROLE]), env=owner)
            admin.execute(sql.SQL("ALTER ROLE {} NOSUPERUSER").format(sql.Identifier(OWNER_ROLE)))
        self.manage("web", "migrate", "--noinput", env=owner)
        self.manage("vault", "migrate", "--database", "vault", "--noinput",
                    env={**owner, "VAULT_DATABASE_URL": self.db_url(OWNER_ROLE, "vault", direct=True)})
        self.manage("sync", "migrate", "--database", "keys", "--noinput",
                    env={**owner, "KEYS_DATABASE_URL": self.db_url(OWNER_ROLE, "keys", direct=True)})

    def _set_up_keys_and_storage(self) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.moto_url, region_name="us-east-1", aws_access_key_id="prodsim",
                     aws_secret_access_key="prodsim").create_bucket(Bucket=BUCKET)
        self.manage("vault", "vault_rotate_kek", "--init")
        self.manage("sync", "storage_kms_rotate", "--init")
        self.manage("web", "collectstatic", "--noinput", "--verbosity", "0")

    # --- the application ------------------------------------------------------------------------
    def _celery(self, name: str, zone: str, queue: str, *extra: str) -> Service:
        return Service(name, [sys.executable, "-m", "celery", "-A", "aiemaily", "worker", "-Q", queue,
                              "-n", f"{name}@%h", "--without-mingle", "--without-gossip", "--loglevel", "INFO",
                              *extra], env=self.zone_env(zone), logs=self.logs, ready_text="ready.")

    def _app_services(self) -> list[Service]:
        services = []
        for index, port in enumerate(self.web_ports, start=1):
            services.append(Service(
                f"web{index}", [sys.executable, "-m", "gunicorn", "aiemaily.wsgi", "--bind", f"127.0.0.1:{port}",
                                "--workers", "2", "--timeout", "30", "--forwarded-allow-ips", "127.0.0.1",
                                "--access-logfile", "-", "--access-logformat",
                                '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(L)s'],
                env=self.zone_env("web"), logs=self.logs, port=port))
        for index in range(1, self.sync_workers + 1):
            services.append(self._celery(f"worker-sync{index}", "sync", "sync", "--concurrency", "1"))
        services.append(self._celery("worker-vault", "vault", "vault", "--concurrency", "1"))
        services.append(self._celery("idle", "idle", "idle", "-P", "threads", "--concurrency", "20"))
        services.append(self._celery("worker-ai", "ai", "ai", "--concurrency", "1"))
        services.append(self._celery("worker-maintenance", "maintenance", "maintenance", "--concurrency", "1"))
        services.append(Service("beat", [sys.executable, "-m", "celery", "-A", "aiemaily", "beat", "--loglevel",
                                         "INFO", "--schedule", str(self.root / "celerybeat-schedule")],
                                env=self.zone_env("beat"), logs=self.logs))
        return services

    def _start_nginx(self) -> None:
        """nginx as a Service, so the fault tests can reload it (SIGHUP) and restart it on the same port."""
        from tests.harness.tls_fixtures import nginx_site

        self.nginx, argv = nginx_site(self.web_ports, cert_key=(self.ca.cert_file, self.ca.key_file),
                                      static_root=self.root / "static")
        # SIGQUIT: a graceful stop (workers finish their requests), as `systemctl stop nginx` does.
        service = self._add(Service("nginx", argv, env={"PATH": os.environ["PATH"]}, logs=self.logs,
                                    port=self.nginx.https_port, stop_signal=signal.SIGQUIT))
        self.stack.callback(shutil.rmtree, self.nginx.folder, ignore_errors=True)
        self.stack.callback(service.stop)  # before its folder goes (callbacks run last-in, first-out)
        self.url = f"https://localhost:{self.nginx.https_port}"

    def start(self) -> ProdSim:
        started = time.monotonic()
        self.stack.callback(self._stop_services)
        try:
            self._keys()
            self._start_postgres()
            self._start_pgbouncer()
            self._start_redis()
            self._start_rabbitmq()
            self._start_moto()
            self._start_softhsm()
            self._start_mail()
            self.root.chmod(0o755)
            (self.root / "static").mkdir(exist_ok=True)
            (self.root / "static").chmod(0o755)
            self._start_nginx()  # first: the site URL (its port) is part of every process's settings
            log("servers up; setting up the databases, the KEK and the storage key")
            self._set_up_database()
            self._set_up_keys_and_storage()
            services = self._app_services()
            for service in services:  # all at once: their imports overlap
                self._add(service, wait=False)
            for service in services:
                service.wait_ready()
            log(f"topology up in {time.monotonic() - started:.0f}s")
        except BaseException:
            self.stop()
            raise
        return self

    def app_processes(self) -> list[str]:
        return [name for name in self.services if name.startswith(("web", "worker-", "idle", "beat"))]

    def _stop_services(self) -> None:
        for service in reversed(list(self.services.values())):
            try:
                service.stop(timeout=20)
            except Exception as error:  # noqa: BLE001 - keep stopping the others
                log(f"stopping {service.name}: {error}")

    def stop(self) -> None:
        self.stack.close()


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (systemd, `timeout`) stops everything like Ctrl-C does


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    root = Path(tempfile.mkdtemp(prefix="aiemaily-prodsim-"))
    sim = ProdSim(root)
    try:
        sim.start()
        log(f"open {sim.url}/ (certificate: {sim.ca.ca_file}, e.g. curl --cacert it)")
        log(f"IMAP test mailbox server: 127.0.0.1:{sim.dovecot.imaps_port} (TLS), any user name, "
            f"password in {root / 'dovecot' / 'dovecot.conf'}")
        log(f"logs in {sim.logs}; Ctrl-C stops everything")
        while True:
            time.sleep(1)
            dead = [s.name for s in sim.services.values() if not s.running]
            if dead:
                log(f"stopped unexpectedly: {', '.join(dead)} (see {sim.logs})")
                return 1
    except KeyboardInterrupt:
        log("stopping")
        return 0
    finally:
        sim.stop()
        if not os.environ.get("AIEMAILY_PRODSIM_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
