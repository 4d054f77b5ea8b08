"""/csp-report: both report formats accepted, bounded, rate-limited per IP, logged redacted, 204.

Each test posts from its own client address (REMOTE_ADDR), so rate-limit counters kept in the
shared cache never leak from one test into another.
"""

import json
import logging
import uuid

import pytest
from django.test import Client, override_settings

pytestmark = [pytest.mark.django_db, pytest.mark.claim("csp")]

LEGACY = "application/csp-report"
REPORTING_API = "application/reports+json"
SECRET_QUERY = "token=canary-7f3e9a"


def legacy_report(**overrides) -> bytes:
    body = {
        "document-uri": f"https://aiemaily.example/dashboard/?{SECRET_QUERY}#frag",
        "referrer": f"https://mail.example/?{SECRET_QUERY}",
        "violated-directive": "script-src-elem",
        "effective-directive": "script-src-elem",
        "original-policy": "default-src 'self'",
        "blocked-uri": f"https://evil.example/x.js?{SECRET_QUERY}",
        "source-file": "https://aiemaily.example/static/js/app.js",
        "line-number": 12,
        "script-sample": "var password = 'hunter2-canary'",
        "disposition": "enforce",
    }
    body.update(overrides)
    return json.dumps({"csp-report": body}).encode()


def reporting_api_report() -> bytes:
    return json.dumps([
        {"type": "csp-violation", "age": 3, "url": f"https://aiemaily.example/?{SECRET_QUERY}",
         "body": {"documentURL": f"https://aiemaily.example/?{SECRET_QUERY}", "effectiveDirective": "img-src",
                  "blockedURL": "https://tracker.example/pixel.gif?uid=42", "disposition": "enforce",
                  "sample": "secret-sample-canary", "lineNumber": 3}},
        {"type": "deprecation", "body": {"message": "not ours"}},
    ]).encode()


@pytest.fixture
def ip():
    # A fresh documentation-range address per test: its own rate-limit bucket.
    return f"2001:db8::{uuid.uuid4().hex[:4]}"


def post(body: bytes, content_type: str, ip: str, **extra):
    return Client().post("/csp-report", body, content_type=content_type, REMOTE_ADDR=ip, **extra)


def _csp_records(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "aiemaily.security.csp"]


def test_legacy_reports_are_accepted_and_logged_without_queries_or_samples(ip, caplog):
    with caplog.at_level(logging.WARNING, logger="aiemaily.security.csp"):
        response = post(legacy_report(), LEGACY, ip)
    assert response.status_code == 204 and response.content == b""
    (message,) = _csp_records(caplog)
    summary = json.loads(message.split(" ", 2)[2])
    assert summary == {
        "document": "https://aiemaily.example/dashboard/",
        "directive": "script-src-elem",
        "blocked": "https://evil.example/x.js",
        "source": "https://aiemaily.example/static/js/app.js",
        "line": "12",
        "disposition": "enforce",
    }
    assert "canary" not in message and "hunter2" not in message


def test_reporting_api_batches_are_accepted_and_only_csp_entries_logged(ip, caplog):
    with caplog.at_level(logging.WARNING, logger="aiemaily.security.csp"):
        response = post(reporting_api_report(), REPORTING_API, ip)
    assert response.status_code == 204
    (message,) = _csp_records(caplog)
    assert '"directive": "img-src"' in message and '"blocked": "https://tracker.example/pixel.gif"' in message
    assert "canary" not in message and "uid=42" not in message


def test_inline_and_eval_keywords_pass_through_the_redaction(ip, caplog):
    with caplog.at_level(logging.WARNING, logger="aiemaily.security.csp"):
        post(legacy_report(**{"blocked-uri": "inline"}), LEGACY, ip)
        post(legacy_report(**{"blocked-uri": "eval"}), LEGACY, ip)
    records = _csp_records(caplog)
    assert '"blocked": "inline"' in records[0] and '"blocked": "eval"' in records[1]


def test_control_characters_and_huge_fields_cannot_forge_log_lines(ip, caplog):
    hostile = "img-src\n2026-01-01 CRITICAL fake entry" + "x" * 5000
    with caplog.at_level(logging.WARNING, logger="aiemaily.security.csp"):
        post(legacy_report(**{"effective-directive": hostile}), LEGACY, ip)
    (message,) = _csp_records(caplog)
    assert "\n" not in message and len(message) < 2000


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/x-www-form-urlencoded"])
def test_other_content_types_are_refused(ip, content_type):
    assert post(legacy_report(), content_type, ip).status_code == 415


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe", b"{\"csp-report\": {"])
def test_malformed_bodies_are_refused(ip, body):
    assert post(body, LEGACY, ip).status_code == 400


@pytest.mark.parametrize("body", [b"[]", b'{"csp-report": "x"}', b'{"other": {}}', b"42"])
def test_well_formed_but_meaningless_bodies_log_nothing(ip, body, caplog):
    with caplog.at_level(logging.WARNING, logger="aiemaily.security.csp"):
        assert post(body, LEGACY, ip).status_code == 204
    assert _csp_records(caplog) == []


@override_settings(AIEMAILY_CSP_REPORT_MAX_BYTES=2048)
def test_oversized_bodies_are_refused_unread(ip, caplog):
    big = legacy_report(**{"script-sample": "A" * 4096})
    with caplog.at_level(logging.WARNING, logger="aiemaily.security.csp"):
        assert post(big, LEGACY, ip).status_code == 413
    assert _csp_records(caplog) == []


@override_settings(AIEMAILY_CSP_REPORT_MAX_BYTES=2048)
def test_a_lying_content_length_does_not_lift_the_cap(ip):
    big = legacy_report(**{"script-sample": "A" * 4096})
    assert post(big, LEGACY, ip, CONTENT_LENGTH="100").status_code in (400, 413)


@override_settings(AIEMAILY_CSP_REPORT_RATE_LIMIT=3)
def test_reports_are_rate_limited_per_client_address(ip, caplog):
    with caplog.at_level(logging.WARNING, logger="aiemaily.security.csp"):
        statuses = [post(legacy_report(), LEGACY, ip).status_code for _ in range(5)]
    assert statuses == [204, 204, 204, 429, 429]
    assert len(_csp_records(caplog)) == 3
    # Another address has its own allowance.
    assert post(legacy_report(), LEGACY, ip + "1").status_code == 204


def test_only_post_is_allowed(ip):
    assert Client().get("/csp-report", REMOTE_ADDR=ip).status_code == 405


def test_no_csrf_token_is_needed():
    response = Client(enforce_csrf_checks=True).post("/csp-report", legacy_report(), content_type=LEGACY,
                                                     REMOTE_ADDR="2001:db8::c5f")
    assert response.status_code == 204
