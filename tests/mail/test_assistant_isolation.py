"""worker-ai as a real process: it holds only its own keys, and a BYOK key or the mail it reads
never shows up in plaintext anywhere but the provider's Authorization header.

This test process serves the API (web); a real worker-vault leases the user's AI key to a real
worker-ai through a real Redis broker; worker-ai calls a local OpenAI-compatible server (streaming).
Then: the worker's own environment is inspected (/proc), the `ai` role tries what only the vault may
do, and the canaries (the BYOK key, a phrase of the mail, the model's answer) are searched for in
both database dumps, every worker log, every broker command and every file under var/ and objects/.
"""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from rest_framework.test import APIClient

from aiemaily.ownership.binding import owner_scope
from mail import blobstore
from secrets_vault.models import AiKey
from tests.conftest import issue_tokens
from tests.harness.ai_provider_server import AiProviderServer
from tests.harness.factories import UserFactory
from tests.harness.processes import Worker
from tests.mail.test_assistant import make_mailbox
from tests.project.test_canary import BrokerTap, _files_under, _pg_dump
from tests.vault.test_vault_isolation import _run

pytestmark = [pytest.mark.django_db(transaction=True, databases=["default", "vault"]),
              pytest.mark.claim("ai-byok"), pytest.mark.claim("no-plaintext-leaks")]

BYOK = "sk-" + "WorkerAiCanaryKey" + "0123456789abcdef"
BODY_CANARY = "Canary-Body-Phrase-Zebra-7731"
REPLY_CANARY = "Canary-Model-Answer-Okapi-4412"
CARD = "4111 1111 1111 1111"
MAIL = (b"From: Alice <alice@example.test>\r\nTo: me@example.test\r\nSubject: Budget\r\n"
        b"Message-ID: <iso-1@example.test>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n\r\n"
        b"The budget needs approval by Friday. " + b"We went through every line of the plan together. " * 8 +
        # Past the 300-character snippet the message list keeps in plaintext: only the body has it.
        BODY_CANARY.encode() + b" is the project name. "
        b"Pay with card " + CARD.encode() + b" please. Can you approve it?\r\n")
# Secrets a worker-ai must not hold (each belongs to another trust zone).
FOREIGN = ("AIEMAILY_VAULT_PRIVATE_KEY_FILE", "AIEMAILY_KMS_LOCAL_DIR", "VAULT_DATABASE_URL",
           "AIEMAILY_SYNC_PRIVATE_KEY_FILE", "GOOGLE_OAUTH_CLIENT_SECRET", "MICROSOFT_CLIENT_SECRET")


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _ready(client, url, *, method="get", data=None):
    """Poll an assistant endpoint (the API's own ?wait) until the result is no longer pending."""
    for _ in range(6):
        response = client.get(url + "?wait=10") if method == "get" else client.post(url, data, format="json")
        method = "get"
        if response.status_code != 202:
            return response
        url = url if "drafts/" in url or "summary" in url else f"/api/v1/drafts/{response.json()['id']}"
    raise AssertionError("worker-ai never finished")


def test_worker_ai_holds_only_its_keys_and_leaks_nothing(tmp_path, caplog, settings):
    provider = AiProviderServer()
    provider.reply = f"Alice asks you to approve the budget by Friday ({REPLY_CANARY})."
    objects = tmp_path / "objects"
    settings.AIEMAILY_OBJECTS_DIR = objects
    settings.AIEMAILY_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]
    blobstore._storage.cache_clear()
    extra = {"AIEMAILY_OBJECTS_DIR": str(objects), "AIEMAILY_ALLOWED_PRIVATE_HOSTS": "127.0.0.1",
             "AIEMAILY_AI_MAX_RETRIES": "0"}
    tap = BrokerTap(settings.CELERY_BROKER_URL, tmp_path / "broker.log")
    vault = Worker("vault", "vault", tmp_path / "vault.log", extra)
    ai = Worker("ai", "ai", tmp_path / "ai.log", extra)
    try:
        vault.wait_ready()
        ai.wait_ready()
        # worker-ai's own environment: its sealing key and storage-key unwrap, nothing of the vault's.
        env = _environ(ai.process.pid)
        assert env["AIEMAILY_PROCESS"] == "ai" and "AIEMAILY_AI_PRIVATE_KEY_FILE" in env
        assert "AIEMAILY_STORAGE_KMS_LOCAL_DIR" in env
        assert [name for name in FOREIGN if name in env] == []

        user = UserFactory()
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(client, user)["access"])
        key = client.post("/api/v1/ai-keys", {"provider": "openai", "key": BYOK, "base_url": provider.openai_base},
                          format="json")
        assert key.status_code == 201, key.content
        assert client.patch("/api/v1/ai-settings", {"mode": "byok", "ai_key": key.json()["id"], "model": "m-1"},
                            format="json").status_code == 200
        conn, (message,) = make_mailbox(user, [MAIL])

        try:
            summary = _ready(client, f"/api/v1/messages/{message.pk}/summary")
        except AssertionError:
            raise AssertionError((ai.output()[-3000:], vault.output()[-3000:])) from None
        assert summary.status_code == 200, (summary.content, ai.output()[-2000:], vault.output()[-2000:])
        body = summary.json()
        assert body["summary"] == provider.reply and body["source"] == "byok" and body["redactions"] == 1
        draft = _ready(client, "/api/v1/drafts", method="post", data={"message": str(message.pk)})
        assert draft.status_code == 200 and draft.json()["body_text"] == provider.reply

        assert len(provider.requests) == 2
        for request in provider.requests:
            assert request["headers"]["Authorization"] == f"Bearer {BYOK}"
            rest = {k: v for k, v in request["headers"].items() if k != "Authorization"}
            assert BYOK not in repr(rest) and BYOK.encode() not in request["raw"]
            assert CARD.encode() not in request["raw"] and BODY_CANARY.encode() in request["raw"]

        # The ai role, asked to do the vault's work, cannot: no KMS, no vault key, no vault database.
        with owner_scope(user):
            secret_id = AiKey.objects.for_owner(user).get().secret_id
        results, output = _run("ai", user, SimpleNamespace(pk=secret_id))
        # (The lease is refused before any key is touched: the key is an ai_key secret, not a password.)
        assert not results["lease"].startswith("OPENED") and results["kms"] == "VaultNotHere"
        assert results["vault_private_key"] == "VaultNotHere" and results["dek"] == "VaultNotHere"
        assert results["vault_db"] == "ConnectionDoesNotExist" and results["holds"] == []
        assert BYOK not in output
    finally:
        vault.stop()
        ai.stop()
        broker = tap.stop()
        provider.stop()
        blobstore._storage.cache_clear()  # the next test's storage follows its own settings again

    var_dir = Path(os.environ["AIEMAILY_VAR_DIR"])
    key_dir = Path(settings.AIEMAILY_KMS_CONFIG["key_dir"]).parent
    haystacks = {
        "postgres default": _pg_dump("default"),
        "postgres vault": _pg_dump("vault"),
        "worker-ai log": ai.output().encode(),
        "worker-vault log": vault.output().encode(),
        "web log": "\n".join(r.getMessage() for r in caplog.records).encode(),
        "broker": broker.encode(),
        "var, keys and objects": _files_under(*(d for d in (var_dir, key_dir, objects) if d.exists())),
    }
    assert "ai_key_lease" in broker and "result_run_leased" in broker  # the tap saw the chain
    assert "result_run_leased" in haystacks["worker-ai log"].decode()  # and worker-ai ran it
    for canary in (BYOK, BODY_CANARY, REPLY_CANARY, CARD):
        for name, data in haystacks.items():
            assert canary.encode() not in data, f"{canary[:14]}… found in {name}"
