"""Secrets never reach logs or error pages: canaries planted in messages, exceptions and settings."""

import io
import logging
import sys

import pytest
from django.test import Client, RequestFactory, override_settings
from django.urls import path
from django.views.debug import get_exception_reporter_class

from aiemaily.logging import JsonFormatter, RedactSecretsFilter, redact

pytestmark = pytest.mark.claim("no-plaintext-leaks")

# Built from pieces so the source itself never looks like a real key to secret scanners.
_LIVE = "sk_" + "live_"
_PEM = "PRIVATE" + " KEY-----"
CANARIES = {
    "bearer": "Bearer abcDEF0123456789canaryBEARER",
    "jwt": "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJjYW5hcnkifQ.c2lnbmF0dXJlY2FuYXJ5",
    "stripe": _LIVE + "CANARY0123456789abcdef",
    "webhook": "whsec_CANARYabcdef0123456789",
    "openai": "sk-proj-CANARY0123456789abcdefghij",
    "pem": "-----BEGIN " + _PEM + "\nMIIEvCANARYCANARY\n-----END " + _PEM,
    "url": "postgresql://app:Canary-Db-Pass-77@db.internal/aiemaily",
    "kv": "password=Canary-Form-Pass-42",
    "oauth": "GET /connections/oauth/gmail/callback?state=Canary-State-3&code=Canary-OAuth-Code-8",
}
SECRET_PARTS = ["Canary-State-3", "Canary-OAuth-Code-8",
                "canaryBEARER", "c2lnbmF0dXJlY2FuYXJ5", _LIVE + "CANARY", "whsec_CANARY",
                "sk-proj-CANARY", "MIIEvCANARY", "Canary-Db-Pass-77", "Canary-Form-Pass-42"]


def _capture(logger_name="aiemaily.test"):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecretsFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    return logger, handler, stream


@pytest.mark.parametrize("name", sorted(CANARIES))
def test_redact_removes_each_kind_of_secret(name):
    text = f"before {CANARIES[name]} after"
    cleaned = redact(text)
    assert "[REDACTED]" in cleaned
    assert all(part not in cleaned for part in SECRET_PARTS)
    assert cleaned.startswith("before")


def test_log_messages_args_and_tracebacks_are_redacted():
    logger, handler, stream = _capture()
    try:
        logger.warning("connecting with %s and %s", CANARIES["url"], CANARIES["bearer"])
        try:
            raise ValueError(f"provider said {CANARIES['openai']} {CANARIES['kv']}")
        except ValueError:
            logger.exception("call failed %s", CANARIES["stripe"])
    finally:
        logging.getLogger("aiemaily.test").removeHandler(handler)
    output = stream.getvalue()
    assert "connecting with" in output and "call failed" in output and "ValueError" in output
    for part in SECRET_PARTS:
        assert part not in output


def _boom(request):
    password = CANARIES["kv"]  # noqa: F841 - a local the error report must not show
    raise RuntimeError("failed using " + CANARIES["webhook"])


urlpatterns = [path("boom", _boom)]


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__)
def test_the_500_page_and_the_request_log_hold_no_secret(caplog):
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.ERROR):
        response = client.get("/boom", HTTP_AUTHORIZATION=CANARIES["bearer"])
    assert response.status_code == 500
    for part in SECRET_PARTS:
        assert part not in response.content.decode()


BROKER_PASSWORD = "Canary-Broker-Pass-5"


def test_the_debug_error_report_hides_settings_locals_and_headers(settings):
    # Canaries come from module constants: the report quotes source lines around each frame.
    settings.CELERY_BROKER_URL = f"redis://:{BROKER_PASSWORD}@redis.internal:6379/0"
    settings.SOME_SERVICE_DSN = CANARIES["url"]
    form_password = CANARIES["kv"].split("=", 1)[1]
    request = RequestFactory().post("/x", {"password": form_password, "note": CANARIES["stripe"]},
                                    HTTP_AUTHORIZATION=CANARIES["bearer"])
    try:
        token = CANARIES["jwt"]  # noqa: F841
        raise RuntimeError("boom " + CANARIES["openai"])
    except RuntimeError:
        html = get_exception_reporter_class(request)(request, *sys.exc_info()).get_traceback_html()
    assert "RuntimeError" in html
    for part in [*SECRET_PARTS, BROKER_PASSWORD]:
        assert part not in html, part
