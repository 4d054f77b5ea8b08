"""The canary test: secrets planted through the API never appear in plaintext anywhere.

Real processes all the way: this test process serves the API (web), a real worker-vault and a real
worker-sync take tasks from a real Redis broker, the IMAP/SMTP logins go to real Dovecot and SMTP
servers. After storing, leasing, verifying and rotating, we search the PostgreSQL dumps of both
databases, every log line (web, worker-vault, worker-sync), every broker command captured with
Redis MONITOR, and every file under var/ and the key folders: the canaries must not be there.
"""

import glob
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import connections
from rest_framework.test import APIClient

from tests.conftest import issue_tokens
from tests.harness.factories import UserFactory
from tests.harness.processes import Worker, role_env, wait_for
from tests.harness.system import require_tool

pytestmark = [pytest.mark.django_db(transaction=True, databases=["default", "vault"]),
              pytest.mark.claim("no-plaintext-leaks"), pytest.mark.claim("isolated-decryption")]

AI_KEY = "sk-proj-CanaryAiKeyNeverInPlaintext0123"


class BrokerTap:
    """Every command the broker sees, payloads included: `redis-cli monitor` writing to a file."""

    def __init__(self, url: str, path: Path):
        self.path = path
        self._out = open(path, "wb")  # noqa: SIM115 - closed in stop()
        binary = require_tool("redis-tools")
        self._process = subprocess.Popen([binary, "-u", url, "monitor"], stdout=self._out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(lambda: path.stat().st_size > 0, timeout=10, what="redis-cli monitor to start")

    def stop(self) -> str:
        self._process.terminate()
        self._process.wait(10)
        self._out.close()
        return self.path.read_text(errors="replace")


def _pg_dump(alias: str) -> bytes:
    binary = shutil.which("pg_dump") or sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))[-1]
    admin = urlsplit(os.environ["TEST_DATABASE_URL"])
    name = connections[alias].settings_dict["NAME"]
    result = subprocess.run([binary, "-h", admin.hostname, "-p", str(admin.port or 5432), "-U", admin.username or
                             "postgres", "--no-owner", name], capture_output=True, check=True)
    return result.stdout


def _files_under(*roots: Path) -> bytes:
    data = b""
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file() and path.stat().st_size < 50_000_000:
                data += path.read_bytes()
    return data


def test_canaries_never_appear_anywhere(tmp_path, caplog, dovecot, smtp_server, test_ca, mail_settings):
    password = dovecot.password  # "Canary-Dovecot-…": the IMAP and SMTP password
    tap = BrokerTap(settings.CELERY_BROKER_URL, tmp_path / "broker.log")
    extra = {"AIEMAILY_MAIL_CA_BUNDLE": str(test_ca.ca_file), "AIEMAILY_ALLOWED_PRIVATE_HOSTS": "127.0.0.1,localhost"}
    vault = Worker("vault", "vault", tmp_path / "vault.log", extra)
    sync = Worker("sync", "sync", tmp_path / "sync.log", extra)
    try:
        vault.wait_ready()
        sync.wait_ready()
        user = UserFactory()
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(client, user)["access"])
        imap_user, _ = dovecot.add_user()
        smtp_server.add_user(imap_user, password)

        assert client.post("/api/v1/ai-keys", {"provider": "openai", "key": AI_KEY}, format="json").status_code == 201
        body = {"provider": "imap", "email": imap_user,
                "imap": {"host": "localhost", "port": dovecot.imaps_port, "security": "tls", "username": imap_user,
                         "password": password},
                "smtp": {"host": "localhost", "port": smtp_server.tls_port, "security": "tls",
                         "username": imap_user, "password": password}}
        connection_id = client.post("/api/v1/connections", body, format="json").json()["id"]
        wait_for(lambda: client.get(f"/api/v1/connections/{connection_id}").json()["status"] != "pending",
                 timeout=60, what="the connection check")
        final = client.get(f"/api/v1/connections/{connection_id}").json()
        assert final["status"] == "active", (final["last_error"], vault.output()[-1500:], sync.output()[-1500:])

        # Rotation while the secrets exist: the DEK through the vault queue, the KEK by the command.
        from secrets_vault.tasks import owner_rotate_dek

        owner_rotate_dek.delay(str(user.pk))
        wait_for(lambda: any(e["action"] == "rotate" for e in client.get("/api/v1/audit").json()["results"]),
                 timeout=60, what="DEK rotation")
        rotate = subprocess.run([os.sys.executable, "manage.py", "vault_rotate_kek"], env=role_env("vault"),
                                capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
        assert rotate.returncode == 0, rotate.stderr[-2000:]
        audit = client.get("/api/v1/audit?limit=200").json()["results"]
        assert {"store", "lease", "rotate"} <= {e["action"] for e in audit}
    finally:
        vault.stop()
        sync.stop()
        broker = tap.stop()

    var_dir = Path(os.environ["AIEMAILY_VAR_DIR"])
    key_dir = Path(settings.AIEMAILY_KMS_CONFIG["key_dir"]).parent
    haystacks = {
        "postgres default": _pg_dump("default"),
        "postgres vault": _pg_dump("vault"),
        "worker-vault log": vault.output().encode(),
        "worker-sync log": sync.output().encode(),
        "kek rotation output": (rotate.stdout + rotate.stderr).encode(),
        "web log": "\n".join(r.getMessage() for r in caplog.records).encode(),
        "broker": broker.encode(),
        "var and keys": _files_under(var_dir, key_dir) if var_dir.exists() else _files_under(key_dir),
    }
    assert "leases_issue" in broker and "owner_rotate_dek" in broker  # the tap saw the traffic
    for canary in (password, AI_KEY):
        for name, data in haystacks.items():
            assert canary.encode() not in data, f"{canary[:12]}… found in {name}"
