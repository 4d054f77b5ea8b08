"""Is this exception a dependency outage (database, PgBouncer, broker, Redis, KMS or object store down)?

Such a request did nothing wrong and will succeed once the dependency is back: it gets 503 with
Retry-After (JSON envelope `service_unavailable` under /api/, a plain page elsewhere), not a 500
that reads as a bug. Anything else stays a 500. aiemaily/views.py's handler500 asks this, so every
path (a view, a DRF view, a middleware) is covered; tests/test_prod_sim.py restarts each dependency.
"""

from django.db import InterfaceError, OperationalError

RETRY_AFTER_SECONDS = 5


def _outage_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [OperationalError, InterfaceError]
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


def is_dependency_outage(exc: BaseException | None) -> bool:
    """True if exc, or an exception it was raised from or during, is an outage (the chain is walked:
    our own errors often wrap the driver's, e.g. a KMS failure re-raised as a storage error)."""
    types = _outage_types()
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, types):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
