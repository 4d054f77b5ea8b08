"""Is this exception a dependency outage (database, PgBouncer, broker, Redis, KMS or object store down)?

Such a request did nothing wrong and will succeed once the dependency is back: it gets 503 with
Retry-After (JSON envelope `service_unavailable` under /api/, a plain page elsewhere), not a 500
that reads as a bug. Anything else stays a 500. aiemaily/views.py's handler500 asks this, so every
path (a view, a DRF view, a middleware) is covered; tests/test_prod_sim.py restarts each dependency.
"""

from django.db import InterfaceError, OperationalError

RETRY_AFTER_SECONDS = 5


def _outage_types() -> tuple[type[BaseException], ...]:
    return (OperationalError, InterfaceError, *_service_outage_types())


def _service_outage_types() -> tuple[type[BaseException], ...]:
    """Everything but the database (whose errors need a closer look: see is_transient_outage)."""
    types: list[type[BaseException]] = []
    # Each client library in its own try, at call time: a process without one still classifies the rest.
    try:  # the broker (a view that enqueues a task while RabbitMQ/Redis is down)
        from kombu.exceptions import OperationalError as BrokerDown

        types.append(BrokerDown)
    except ImportError:  # pragma: no cover - kombu is a dependency
        pass
    try:  # Redis, the cache behind every API call's throttle and the sign-in limits
        from redis.exceptions import ConnectionError as RedisDown
        from redis.exceptions import TimeoutError as RedisTimeout

        types += [RedisDown, RedisTimeout]
    except ImportError:  # pragma: no cover - only where REDIS_URL is used
        pass
    try:  # KMS and S3 endpoints that cannot be reached, or time out
        from botocore.exceptions import (
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        types += [EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError]
    except ImportError:  # pragma: no cover - boto3 is a dependency
        pass
    return tuple(types)


# SQLSTATEs that mean "the database is not there right now", not "this statement is wrong": class 08
# (connection exceptions: PgBouncer's "server conn crashed?" is 08P01), the server shutting down or
# starting (57P01-57P03) and too many connections (53300, from PostgreSQL or PgBouncer).
_UNAVAILABLE_STATES = {"57P01", "57P02", "57P03", "53300"}


def _database_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, InterfaceError):  # "connection already closed"
        return True
    try:  # at call time, like the client libraries above: make run's SQLite needs no driver loaded
        import psycopg
    except ImportError:  # pragma: no cover - the PostgreSQL driver is a dependency
        return False
    if isinstance(exc, psycopg.InterfaceError):
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        # No SQLSTATE: the server never answered (refused, reset, closed mid-way).
        return state is None or state.startswith("08") or state in _UNAVAILABLE_STATES
    if isinstance(exc, psycopg.InternalError) and exc.sqlstate is None:
        # Raised by psycopg itself, not the server (whose internal errors carry XX000): the
        # connection's protocol state broke, as when PgBouncer reports a crashed server connection
        # between two statements ("received 2 results from command 'BEGIN'"). A new connection works.
        return True
    return False


def is_transient_outage(exc: BaseException | None) -> bool:
    """Narrower than is_dependency_outage, for code that retries on its own: a dependency that was
    unreachable, never a statement the database refused. Django raises OperationalError for both a
    lost connection and, say, an index row too large for one message; only the first may be retried
    (the second would fail the same way on every try, and must be handled as that message's error)."""
    types = _service_outage_types()
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, types) or _database_unavailable(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def is_dependency_outage(exc: BaseException | None) -> bool:
    """True if exc, or an exception it was raised from or during, is an outage (the chain is walked:
    our own errors often wrap the driver's, e.g. a KMS failure re-raised as a storage error)."""
    types = _outage_types()
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, types) or _database_unavailable(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
