"""A dependency outage (database, PgBouncer, broker, KMS/S3 endpoint) answers 503 + Retry-After, not 500.

handler500 decides from the exception being handled (aiemaily/ops/outage.py). tests/test_prod_sim.py
proves the same against real outages; these run in milliseconds on every `make test`.
"""

import json

import psycopg
import pytest
from botocore.exceptions import EndpointConnectionError
from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerDown
from redis.exceptions import ConnectionError as RedisDown

from aiemaily.ops.outage import is_transient_outage
from aiemaily.views import server_error


def _handle(rf, path: str, exc: BaseException):
    request = rf.get(path)  # no session, no user: the 503 page must not need them (the database is down)
    try:
        raise exc
    except BaseException:  # noqa: BLE001 - Django calls handler500 inside its except block, as here
        return server_error(request)


def _wrapped(inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise RuntimeError("storage failed") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize("exc", [
    OperationalError("server closed the connection unexpectedly"),
    InterfaceError("connection already closed"),
    BrokerDown("[Errno 111] Connection refused"),
    RedisDown("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    EndpointConnectionError(endpoint_url="http://kms.internal"),
    _wrapped(EndpointConnectionError(endpoint_url="http://kms.internal")),
])
def test_an_outage_under_the_api_is_a_503_json_envelope_with_retry_after(rf, exc):
    response = _handle(rf, "/api/v1/messages", exc)
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert json.loads(response.content) == {"error": {
        "code": "service_unavailable", "message": "The service is briefly unavailable; try again in a moment."}}


def test_an_outage_on_a_page_is_a_503_page_that_needs_no_database(rf):
    response = _handle(rf, "/dashboard/", OperationalError("connection refused"))
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert b"briefly unavailable" in response.content


@pytest.mark.parametrize("path", ["/api/v1/messages", "/dashboard/"])
def test_a_bug_is_still_a_500(rf, path):
    response = _handle(rf, path, ValueError("a bug"))
    assert response.status_code == 500
    assert not response.has_header("Retry-After")


def _django_wrapped(driver_error: BaseException) -> BaseException:
    """As Django raises it: its own OperationalError, raised from the driver's."""
    try:
        try:
            raise driver_error
        except BaseException as exc:
            raise OperationalError(str(exc)) from exc
    except OperationalError as outer:
        return outer


@pytest.mark.parametrize("exc", [
    _django_wrapped(psycopg.OperationalError("connection refused")),  # no SQLSTATE: never answered
    _django_wrapped(psycopg.errors.ProtocolViolation("server conn crashed?")),  # PgBouncer, 08P01
    _django_wrapped(psycopg.errors.AdminShutdown("terminating connection due to administrator command")),
    _django_wrapped(psycopg.errors.TooManyConnections("no more connections allowed")),
    # psycopg's own (no SQLSTATE): PgBouncer reported the crashed server between two statements.
    _django_wrapped(psycopg.InternalError("received 2 results from command 'BEGIN'")),
    InterfaceError("connection already closed"),
    BrokerDown("[Errno 111] Connection refused"),
    RedisDown("Error 111"),
    _wrapped(EndpointConnectionError(endpoint_url="http://kms.internal")),
])
def test_a_dependency_out_of_reach_is_a_transient_outage_a_sync_may_retry(exc):
    assert is_transient_outage(exc)


@pytest.mark.parametrize("exc", [
    # Also OperationalError to Django, but the same statement fails the same way on every try.
    _django_wrapped(psycopg.errors.ProgramLimitExceeded("index row size 9000 exceeds maximum 2712")),
    _django_wrapped(psycopg.errors.QueryCanceled("canceling statement due to statement timeout")),
    _django_wrapped(psycopg.errors.InternalError_("an internal error the server reports (XX000)")),
    ValueError("a bug"),
])
def test_a_statement_the_database_refuses_is_not_retried_as_an_outage(exc):
    assert not is_transient_outage(exc)
