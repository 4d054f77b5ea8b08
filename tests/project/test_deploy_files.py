"""The deployment files stay in step with the Procfile, and each zone's environment holds only the
secrets that zone may hold (docs/deployment.md's table)."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

# Secret -> the env files (zones) allowed to hold it. Everything not listed here is not a secret.
SECRET_HOMES = {
    "JWT_PRIVATE_KEY": {"web"},
    "VAULT_DATABASE_URL": {"vault"},
    "AIEMAILY_KMS": {"vault"},
    "AIEMAILY_AWS_KMS_KEY_ID": {"vault"},
    "AIEMAILY_PKCS11_PIN": {"vault"},
    "AIEMAILY_VAULT_PRIVATE_KEY": {"vault"},
    "GOOGLE_OAUTH_CLIENT_SECRET": {"vault"},
    "MICROSOFT_CLIENT_SECRET": {"vault"},
    "AIEMAILY_SYNC_PRIVATE_KEY": {"sync"},
    "AIEMAILY_AI_PRIVATE_KEY": {"ai"},
    "AIEMAILY_AI_PLATFORM_KEY": {"ai"},
    "AIEMAILY_STORAGE_AWS_KMS_KEY_ID": {"web", "sync", "ai"},
    "STRIPE_SECRET_KEY": {"web", "sync"},
    "STRIPE_WEBHOOK_SECRETS": {"web"},
    "DATABASE_MAINTENANCE_URL": {"maintenance", "admin"},
    "KEYS_DATABASE_URL": {"web", "sync", "ai"},
    "SECRET_KEY": {"common"},
}
# Procfile process -> the env file of its zone.
ZONE_OF = {"web": "web", "worker-vault": "vault", "worker-sync": "sync", "idle": "sync", "worker-ai": "ai",
           "beat": "beat", "worker-maintenance": "maintenance", "admin": "admin"}


def procfile() -> dict[str, str]:
    entries = {}
    for line in (REPO / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def env_names(zone: str) -> set[str]:
    text = (DEPLOY / "env" / f"{zone}.env.example").read_text()
    names = set()
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            name = line.split("=", 1)[0].strip()
            names.add(name.removesuffix("_FILE"))
    return names


def _process_env(command: str) -> str:
    found = re.search(r"AIEMAILY_PROCESS=(\w+)", command)
    assert found, command
    return found.group(1)


def _queue(command: str) -> str | None:
    found = re.search(r"-Q (\w+)", command)
    return found.group(1) if found else None


@pytest.mark.parametrize("process", sorted(procfile()))
def test_every_procfile_process_has_a_systemd_unit_and_a_compose_service_for_the_same_zone(process):
    command = procfile()[process]
    unit = (DEPLOY / "systemd" / f"aiemaily-{process}.service").read_text()
    assert f"Environment=AIEMAILY_PROCESS={_process_env(command)}\n" in unit
    assert f"EnvironmentFile=/etc/aiemaily/{ZONE_OF[process]}.env\n" in unit
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert _queue(exec_start) == _queue(command)
    compose = (DEPLOY / "compose.yaml").read_text()
    block = compose.split(f"\n  {process}:\n", 1)[1].split("\n  ", 1)[0] if f"\n  {process}:\n" in compose else ""
    service = re.search(rf"\n  {re.escape(process)}:\n((?:    .*\n)+)", compose)
    assert service, f"no compose service {process}"
    assert f"AIEMAILY_PROCESS: {_process_env(command)}" in service.group(1)
    assert f"env/{ZONE_OF[process]}.env" in service.group(1)
    assert block is not None


def test_each_zone_holds_only_its_own_secrets():
    for path in sorted((DEPLOY / "env").glob("*.env.example")):
        zone = path.name.removesuffix(".env.example")
        for name in env_names(zone):
            if name in SECRET_HOMES:
                assert zone in SECRET_HOMES[name], f"{name} must not be in {path.name}"


def test_every_variable_in_the_env_files_is_a_real_setting():
    # Every module of the settings package (aiemaily/settings/), read as one text.
    settings_source = "\n".join(path.read_text() for path in sorted((REPO / "aiemaily" / "settings").glob("*.py")))
    assert "AIEMAILY_PROCESS" in settings_source and "DATABASE_URL" in settings_source  # the package was read
    for path in sorted((DEPLOY / "env").glob("*.env.example")):
        for name in env_names(path.name.removesuffix(".env.example")):
            assert f'"{name}"' in settings_source, f"{path.name}: {name} is not read by aiemaily/settings/"


def test_secret_values_are_files_never_inline():
    for path in sorted((DEPLOY / "env").glob("*.env.example")):
        for line in path.read_text().splitlines():
            name = line.split("=", 1)[0].strip()
            if name.removesuffix("_FILE") in SECRET_HOMES and "URL" not in name and "KMS" not in name:
                assert name.endswith("_FILE"), f"{path.name}: {name} should be given as a file"


def test_the_deployment_doc_table_names_every_zone_secret():
    doc = (REPO / "docs" / "deployment.md").read_text()
    for name in SECRET_HOMES:
        assert f"`{name}`" in doc, name
