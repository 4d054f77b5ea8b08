"""The import contracts of pyproject.toml ([tool.importlinter]) hold, and they catch what they forbid.

`make lint` and .ci/run run `lint-imports` too; this makes `make test` enforce the same contracts,
and proves each one fails on a deliberately bad import in a throwaway copy of the tree (a contract
that cannot fail would prove nothing).
"""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
PACKAGES = CONFIG["root_packages"]
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def _lint_imports(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LINT_IMPORTS, "--no-cache", "--no-logo"], cwd=tree, capture_output=True, text=True,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}, timeout=120, check=False)


def test_the_tree_keeps_every_import_contract():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONFIG['contracts'])} kept, 0 broken." in result.stdout


@pytest.fixture
def tree_copy(tmp_path):
    """The five packages and pyproject.toml, copied (without migrations or caches) to add a bad import to."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "migrations", "*.pyc", "static", "templates"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


BAD_IMPORTS = [
    # (the module added, its source, the contract it breaks)
    ("secrets_vault/oauth/_probe.py", "from mail.models import Connection\n", "vault-never-imports-mail"),
    # Hidden in a function, as the old vault tasks did: still an import, still refused.
    ("secrets_vault/_probe.py", "def f():\n    from mail import services\n    return services\n",
     "vault-never-imports-mail"),
    ("mail/api/_probe.py", "from secrets_vault import keystore\n", "web-not-key-store"),
    ("accounts/api/_probe.py", "from secrets_vault.kms.local import LocalKms\n", "web-not-key-store"),
    # Strict: not even through another module (here, the vault's own tasks, which use the key store).
    ("mail/web/_probe.py", "from secrets_vault.tasks import oauth_exchange\n", "web-not-key-store"),
    ("secrets_vault/api/_probe.py", "from secrets_vault import vault_services\n", "web-not-key-store"),
    # The sync and ai pools hold lease keys, never the vault's key store or OAuth client secrets.
    ("mail/sync/_probe.py", "import secrets_vault.oauth.grants\n", "sync-and-ai-not-vault"),
    ("mail/assistant/_probe.py", "from secrets_vault import vault_services\n", "sync-and-ai-not-vault"),
    # Web queues worker tasks by name: importing a task module (or the AI runner) is refused.
    ("mail/api/_probe.py", "from mail.tasks import connection_sync\n", "web-not-workers"),
    ("accounts/api/_probe.py", "from mail.assistant import runner\n", "web-not-workers"),
    # Worker code (here worker-sync's) never reaches the web zone's pages or API.
    ("mail/sync/_probe.py", "from mail.web import mailbox\n", "workers-not-web"),
    ("mail/send/_probe.py", "import mail.api.outbox\n", "workers-not-web"),
    # A cycle between apps: billing is imported by accounts and mail, so it may not import them.
    ("billing/_probe.py", "import accounts.models\n", "app-layers"),
    ("mail/_probe.py", "from accounts import services\n", "app-layers"),
    # The project's core never depends on an app.
    ("aiemaily/ownership/_probe.py", "from mail import selectors\n", "app-layers"),
]


@pytest.mark.parametrize(("path", "source", "contract"), BAD_IMPORTS, ids=[f"{b[2]}:{b[0]}" for b in BAD_IMPORTS])
def test_a_forbidden_import_breaks_its_contract(tree_copy, path, source, contract):
    assert _lint_imports(tree_copy).returncode == 0  # the copy itself is clean
    (tree_copy / path).write_text(source)
    result = _lint_imports(tree_copy)
    assert result.returncode == 1, result.stdout
    names = {c["id"]: c["name"] for c in CONFIG["contracts"]}
    broken = result.stdout.split("Broken contracts")[-1]
    assert names[contract].split(" (")[0][:40] in " ".join(broken.split())
    assert path.removesuffix(".py").replace("/", ".") in broken


def _layered_modules() -> set[str]:
    contract = next(c for c in CONFIG["contracts"] if c["id"] == "app-layers")
    return {name.strip() for layer in contract["layers"] for name in layer.replace("|", ":").split(":")}


def test_every_module_of_the_project_package_has_a_layer():
    """A new aiemaily module outside the layers would escape the no-cycle rule: each one is placed."""
    layered = _layered_modules()
    unplaced = []
    for path in sorted((ROOT / "aiemaily").iterdir()):
        if path.name.startswith(("_", ".")) or path.name == "management" or not (
                path.suffix == ".py" or (path / "__init__.py").exists()):
            continue
        module = f"aiemaily.{path.stem}"
        if module == "aiemaily.ops":  # split between the wiring (readiness, jobs) and the core (beat lock)
            unplaced += [f"aiemaily.ops.{p.stem}" for p in path.glob("*.py")
                         if p.stem != "__init__" and f"aiemaily.ops.{p.stem}" not in layered]
        elif module not in layered:
            unplaced.append(module)
    assert unplaced == []
    assert {"accounts", "mail", "billing", "secrets_vault"} <= layered
