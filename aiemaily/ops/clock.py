"""One clock for expiries that cross machines: the database server's, not this process's.

A lease is issued by worker-vault and opened by worker-sync or worker-ai, usually on other machines.
If each read its own wall clock, a worker whose clock runs behind would open a lease after it has
expired (and one running ahead would refuse fresh ones). Both ask PostgreSQL instead, through the
main database every zone already reaches: `clock_timestamp()` is the time now (`now()` would be the
start of the current transaction, which a long transaction holds still). On SQLite (`make run`, one
machine) the database's clock is this machine's clock. Durations inside one process (caches, the
beat lease's renewal) use time.monotonic(), which a wall-clock step does not move.
"""

from datetime import UTC, datetime

from django.db import connections


def database_now(using: str = "default") -> datetime:
    connection = connections[using]
    if connection.vendor != "postgresql":
        return datetime.now(UTC)
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0].astimezone(UTC)
