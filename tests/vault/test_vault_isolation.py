"""Isolated decryption: real processes, each with only its own keys.

The web process, configured as in production, cannot decrypt a stored credential even when asked
to; only worker-vault can, and it hands out nothing but leases sealed to the sync pool.
"""

import json

import pytest

from aiemaily.ownership.binding import owner_scope
from secrets_vault.models import Secret
from tests.harness.factories import UserFactory, stored_secret
from tests.harness.processes import run_as

pytestmark = [pytest.mark.django_db(transaction=True, databases=["default", "vault"]),
              pytest.mark.claim("isolated-decryption")]

CANARY = "Canary-Isolation-Pass-31"

ATTEMPTS = """
import json, django
django.setup()
from django.db import connections
from aiemaily.ownership.binding import owner_scope
results = {}
def attempt(name, fn):
    try:
        value = fn()
        results[name] = "OPENED:" + repr(value)
    except Exception as exc:
        results[name] = type(exc).__name__
from secrets_vault import keystore, vault_services
from secrets_vault.models import Secret
owner, secret_id = %(owner)r, %(secret)r
def lease():
    with owner_scope(owner):
        return vault_services.secret_lease(owner_id=owner, secret_id=secret_id, connection_id="c",
                                           purpose="imap_password")
attempt("lease", lease)
attempt("kms", keystore.kms)
attempt("vault_private_key", keystore.vault_private_key)
attempt("dek", lambda: keystore.dek(owner, 1))
attempt("vault_db", lambda: connections["vault"].cursor())
def read_row():
    with owner_scope(owner):
        row = Secret.objects.for_owner(owner).get(pk=secret_id)
        return len(bytes(row.ciphertext))
attempt("read_row", read_row)
from django.conf import settings
results["holds"] = sorted(k for k in ("AIEMAILY_VAULT_PRIVATE_KEY", "AIEMAILY_KMS_CONFIG", "AIEMAILY_SYNC_PRIVATE_KEY")
                          if getattr(settings, k))
print("RESULT" + json.dumps(results))
"""


def _run(role, owner, secret, production=False):
    result = run_as(role, ATTEMPTS % {"owner": str(owner.pk), "secret": str(secret.pk)}, production=production)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT"):]), result.stdout + result.stderr


def test_the_production_web_process_cannot_decrypt_a_stored_secret():
    owner = UserFactory()
    secret = stored_secret(owner, CANARY)
    results, output = _run("web", owner, secret, production=True)
    assert results["lease"] == "VaultNotHere"
    assert results["kms"] == "VaultNotHere"
    assert results["vault_private_key"] == "VaultNotHere"
    assert results["dek"] == "VaultNotHere"
    assert results["vault_db"] == "ConnectionDoesNotExist"
    assert results["read_row"].startswith("OPENED:")  # it can read the row — ciphertext only
    assert results["holds"] == []
    assert CANARY not in output


def test_the_sync_process_cannot_decrypt_either():
    owner = UserFactory()
    secret = stored_secret(owner, CANARY)
    results, output = _run("sync", owner, secret)
    assert results["lease"] == "VaultNotHere" and results["dek"] == "VaultNotHere"
    assert results["holds"] == ["AIEMAILY_SYNC_PRIVATE_KEY"]
    assert CANARY not in output


def test_the_vault_process_can_lease_and_nothing_else_leaks():
    owner = UserFactory()
    secret = stored_secret(owner, CANARY)
    results, output = _run("vault", owner, secret)
    assert results["lease"].startswith("OPENED:<Lease")
    assert results["holds"] == ["AIEMAILY_KMS_CONFIG", "AIEMAILY_VAULT_PRIVATE_KEY"]
    assert CANARY not in output
    with owner_scope(owner):
        assert Secret.objects.for_owner(owner).get(pk=secret.pk).state == "stored"
