"""Settings fail closed: a production process refuses to start with unsafe or missing configuration."""

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from aiemaily.env import env_bool, env_int, env_secret


def _start(env_overrides: dict[str, str | None]) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for key, value in env_overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True
    )


def test_env_bool_rejects_anything_but_true_or_false(monkeypatch):
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG"):
        env_bool("X_FLAG", False)


def test_env_int_rejects_garbage(monkeypatch):
    monkeypatch.setenv("X_NUM", "12a")
    with pytest.raises(ImproperlyConfigured):
        env_int("X_NUM", 1)


def test_env_secret_reads_a_file_and_never_shows_the_value_in_errors(monkeypatch, tmp_path):
    path = tmp_path / "s"
    path.write_text("canary-value-123\n")
    monkeypatch.setenv("X_SECRET_FILE", str(path))
    assert env_secret("X_SECRET") == "canary-value-123"
    monkeypatch.setenv("X_SECRET", "canary-value-123")
    with pytest.raises(ImproperlyConfigured) as info:
        env_secret("X_SECRET")
    assert "canary-value-123" not in str(info.value)


def test_production_refuses_to_start_without_a_secret_key():
    result = _start({"AIEMAILY_ENV": "production", "SECRET_KEY_FILE": None, "SECRET_KEY": None})
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_refuses_debug():
    result = _start({"AIEMAILY_ENV": "production", "DEBUG": "true"})
    assert result.returncode != 0
    assert "DEBUG" in result.stderr


def test_production_refuses_to_start_without_allowed_hosts():
    result = _start({"AIEMAILY_ENV": "production", "ALLOWED_HOSTS": None})
    assert result.returncode != 0
    assert "ALLOWED_HOSTS" in result.stderr


def test_the_default_profile_is_production_with_debug_off():
    result = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.AIEMAILY_ENV, settings.DEBUG, "
                               "settings.AIEMAILY_PROCESS)"],
        env={k: v for k, v in os.environ.items() if k not in ("AIEMAILY_ENV", "DEBUG", "AIEMAILY_PROCESS")},
        capture_output=True, text=True,
    )
    assert result.stdout.strip() == "production False web", result.stderr


def test_production_refuses_the_test_process_that_plays_every_role():
    result = _start({"AIEMAILY_ENV": "production", "AIEMAILY_PROCESS": "test"})
    assert result.returncode != 0
    assert "AIEMAILY_PROCESS=test" in result.stderr


@pytest.mark.parametrize("process", ["maintenance", "admin"])
def test_production_maintenance_processes_refuse_to_start_without_their_own_database_url(process):
    result = _start({"AIEMAILY_ENV": "production", "AIEMAILY_PROCESS": process, "DATABASE_MAINTENANCE_URL": None})
    assert result.returncode != 0
    assert "DATABASE_MAINTENANCE_URL" in result.stderr


@pytest.mark.parametrize("process", ["web", "sync", "ai", "idle", "vault", "beat"])
def test_other_processes_ignore_a_maintenance_url_they_were_given_by_mistake(process):
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; "
                               "print(sorted(settings.DATABASES))"],
        env={**os.environ, "AIEMAILY_PROCESS": process,
             "DATABASE_MAINTENANCE_URL": "postgresql://aiemaily_maintenance:leaked@127.0.0.1:1/x"},
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "maintenance" not in result.stdout
