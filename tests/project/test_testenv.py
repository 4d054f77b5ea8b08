"""`make test` installs system packages once, before pytest: fixtures only check (issue: a fresh machine).

Two pytest workers running apt-get at the same moment lost the dpkg lock on a fresh machine; now
tests/harness/system.py owns the one package list, scripts/testenv.py the one install (before pytest
starts), and fixtures call require_tool.
"""

import re
from pathlib import Path

import pytest

from tests.harness import system

REPO = Path(__file__).resolve().parents[2]
TEST_SOURCES = sorted([*REPO.glob("tests/**/*.py"), *REPO.glob("benchmarks/*.py")])
OWNER = Path(system.__file__).resolve()  # the one module that may install packages and hand out ports


def test_require_tool_reports_a_missing_package_clearly_and_installs_nothing(monkeypatch, tmp_path):
    monkeypatch.setitem(system.SYSTEM_PACKAGES, "nginx", str(tmp_path / "no-such-nginx"))
    with pytest.raises(RuntimeError) as raised:
        system.require_tool("nginx")
    assert "nginx" in str(raised.value) and "make test" in str(raised.value)
    assert system.missing_packages() == ["nginx"]


def test_require_tool_returns_the_installed_file():
    assert Path(system.require_tool("postgresql")).name == "initdb"


def test_no_test_module_runs_apt_get_or_keeps_its_own_port_helper():
    assert OWNER in TEST_SOURCES and "def free_port" in OWNER.read_text()  # the scan does read the owner
    offenders = [path.name for path in TEST_SOURCES
                 if path.name != Path(__file__).name and path.resolve() != OWNER
                 and re.search(r'"apt-get"|def apt_install|def free_port', path.read_text())]
    assert offenders == []


def test_every_required_package_is_in_the_one_list():
    required = {name for path in TEST_SOURCES for name in re.findall(r'require_tool\("([^"]+)"\)', path.read_text())}
    assert required, "the fixtures should check their tools through require_tool"
    assert required - set(system.SYSTEM_PACKAGES) == set()


def test_loadgroup_keeps_a_group_on_one_worker(tmp_path):
    """`make test` relies on --dist loadgroup to run test_prod_sim.py's one topology on one worker;
    pytest 9.2 with xdist 3.8 silently spread a group over the workers (pyproject pins pytest)."""
    import subprocess
    import sys

    (tmp_path / "test_grouped.py").write_text(
        "import os, pytest\n"
        "pytestmark = pytest.mark.xdist_group('one')\n"
        "@pytest.mark.parametrize('i', range(6))\n"
        "def test_in_group(i):\n"
        "    with open(os.path.join(os.path.dirname(__file__), 'workers.txt'), 'a') as f:\n"
        "        f.write(os.environ['PYTEST_XDIST_WORKER'] + '\\n')\n")
    (tmp_path / "test_other.py").write_text(
        "import time, pytest\n@pytest.mark.parametrize('i', range(6))\ndef test_other(i):\n    time.sleep(0.1)\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q", "-p", "no:cacheprovider",
         "-p", "no:django", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    workers = (tmp_path / "workers.txt").read_text().split()
    assert len(workers) == 6 and len(set(workers)) == 1, workers
