"""Only web signs API tokens: no other production process needs or reads JWT_PRIVATE_KEY.

Real processes under production settings, each with its own zone's environment (tests/processes.py).
"""

import subprocess
import sys

import pytest

from tests.harness.processes import ROOT, role_env

CODE = ("import django; django.setup(); from django.conf import settings; "
        "print('signing key' if settings.JWT_PRIVATE_KEY else 'no signing key', "
        "'verifying key' if settings.JWT_PUBLIC_KEY else 'no verifying key')")


def _start(role: str, **overrides: str | None) -> subprocess.CompletedProcess:
    env = role_env(role, production=True, extra={"ALLOWED_HOSTS": "aiemaily.example"})
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run([sys.executable, "-c", CODE], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


NON_WEB = ["vault", "sync", "idle", "ai", "maintenance", "beat", "admin"]


@pytest.mark.parametrize("role", NON_WEB)
def test_a_production_worker_starts_without_the_signing_key(role):
    result = _start(role, JWT_PRIVATE_KEY=None, JWT_PRIVATE_KEY_FILE=None)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "no signing key verifying key"


@pytest.mark.parametrize("role", ["sync", "vault", "admin"])
def test_a_production_worker_never_reads_a_signing_key_it_was_given_by_mistake(role, tmp_path):
    # A file the process cannot read: reading it at all would stop start-up with "cannot read".
    missing = tmp_path / "jwt-private.pem"
    result = _start(role, JWT_PRIVATE_KEY_FILE=str(missing))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "no signing key verifying key"
    # And a value in the environment itself is not picked up either.
    leaked = _start(role, JWT_PRIVATE_KEY_FILE=None, JWT_PRIVATE_KEY="planted-by-the-test-not-a-real-key")
    assert leaked.returncode == 0, leaked.stderr[-2000:]
    assert leaked.stdout.strip().splitlines()[-1] == "no signing key verifying key"


def test_production_web_still_refuses_to_start_without_the_signing_key():
    refused = _start("web", JWT_PRIVATE_KEY=None, JWT_PRIVATE_KEY_FILE=None)
    assert refused.returncode != 0
    assert "JWT_PRIVATE_KEY" in refused.stderr
    web = _start("web")
    assert web.returncode == 0, web.stderr[-2000:]
    assert web.stdout.strip().splitlines()[-1] == "signing key verifying key"
