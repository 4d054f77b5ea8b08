"""Records which promise each test proves and how it ended, for `make security-report` and CI.

A test says what it proves with `@pytest.mark.claim("<id>")`. At collection an unknown id is an
error (a typo would otherwise prove nothing). Each claim travels in the report's user_properties,
so it reaches the xdist controller, which writes one JSON file at the end of the session:
`{"claims": {"<id>": {"<nodeid>": "passed"|"failed"|"skipped"}}, "extra": {...}}`.
Tests may add report values too (`record_report_value`), e.g. the header check's score.
"""

import json
import os
from pathlib import Path

import pytest

from aiemaily.claims import CLAIM_IDS

RESULTS_ENV = "AIEMAILY_CLAIMS_RESULTS"
DEFAULT_RESULTS = Path(__file__).resolve().parents[2] / "var" / "claims-results.json"
REPORT_VALUE = "report-value"


def pytest_collection_modifyitems(config, items):
    for item in items:
        for mark in item.iter_markers("claim"):
            claim_id = mark.args[0] if mark.args else None
            if claim_id not in CLAIM_IDS:
                raise pytest.UsageError(f"{item.nodeid}: unknown claim id {claim_id!r} (see aiemaily/claims.py)")
            item.user_properties.append(("claim", claim_id))


@pytest.fixture
def record_report_value(record_property):
    """Adds a named value to the security report (e.g. the header score); travels like a claim."""

    def record(name: str, value) -> None:
        record_property(REPORT_VALUE, {"name": name, "value": value})

    return record


class _Collector:
    def __init__(self):
        self.outcomes: dict[str, dict[str, str]] = {}
        self.extra: dict[str, object] = {}

    def pytest_runtest_logreport(self, report):
        claims = [value for name, value in report.user_properties if name == "claim"]
        for name, value in report.user_properties:
            if name == REPORT_VALUE:
                self.extra[value["name"]] = value["value"]
        if not claims:
            return
        if report.when == "call" or report.outcome != "passed":
            outcome = report.outcome
            for claim_id in claims:
                tests = self.outcomes.setdefault(claim_id, {})
                # A failure in any phase (setup, call, teardown) wins over an earlier pass.
                if tests.get(report.nodeid) != "failed":
                    tests[report.nodeid] = outcome

    def pytest_sessionfinish(self, session):
        path = Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"claims": self.outcomes, "extra": self.extra}, indent=1, sort_keys=True))


def pytest_configure(config):
    # Only the process that sees every report writes the file: the xdist controller, or a plain run.
    # `make test`'s second step re-runs a smoke subset on SQLite; its partial results must not replace
    # the full PostgreSQL run's, which `.ci/run` checks right after.
    if os.environ.get("AIEMAILY_TEST_DATABASE") == "sqlite":
        return
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(_Collector(), "aiemaily-claims-collector")
