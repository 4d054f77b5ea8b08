"""Many rows in one INSERT whose text does not grow with the row count (PostgreSQL).

Django's bulk_create writes one placeholder per value: a batch of 500 messages is a statement of
some 15,000 placeholders that Django assembles and psycopg then re-parses (its statement cache
only keeps short statements), which cost more of an initial sync than the database's own work.
Here each column travels as one array and the statement is `INSERT … SELECT * FROM unnest(…)`:
the same short text for every batch, values adapted by psycopg's C dumpers. `ON CONFLICT DO
NOTHING RETURNING pk` also says which rows were new, where bulk_create(ignore_conflicts=True)
needs a second query to find out.

An array-typed column goes as the text of its literals (unnest would flatten an array of arrays).

The arrays go in PostgreSQL's binary format, on a cursor that binds on the server: Django's cursor
binds on the client, quoting every value into the statement's text (each bytea escaped as text),
which cost as much as the insert itself. The statement is never prepared (`prepare=False`), so
PgBouncer's transaction pooling (no named prepared statements before 1.21) is unaffected.
"""

import psycopg
from django.db import connections, models, transaction


def insert_new(model, objs: list, using: str = "default") -> set | None:
    """Insert `objs` (primary keys already set), skipping any row that hits a unique constraint.
    Returns the primary keys of the rows inserted, or None where this path does not apply (not
    PostgreSQL): the caller then uses bulk_create."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return None
    if not objs:
        return set()
    meta = model._meta
    fields = [f for f in meta.local_concrete_fields if not f.generated]
    quote = connection.ops.quote_name
    arrays, casts, selected = [], [], []
    for n, field in enumerate(fields):
        db_type = field.db_type(connection)
        if db_type is None:
            raise ValueError(f"{meta.label}.{field.name}: no column type")
        values = _column(field, objs, connection)
        if db_type.endswith("]"):
            # unnest() would flatten an array of arrays: such a column travels as the text of each
            # array literal and is cast back row by row.
            if any(v is not None and not isinstance(v, str) for v in values):
                raise ValueError(f"{meta.label}.{field.name}: an array column needs its literal text")
            casts.append("%b::text[]")
            selected.append(f"c{n}::{db_type}")
        else:
            casts.append(f"%b::{db_type}[]")
            selected.append(f"c{n}")
        arrays.append(values)
    # Only names and types from the model's own definition go into the text; every value is a parameter.
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    names = ", ".join(quote(f.column) for f in fields)
    aliases = ", ".join(f"c{n}" for n in range(len(fields)))
    sql = (f"INSERT INTO {table} ({names}) SELECT {', '.join(selected)} "  # noqa: S608
           f"FROM unnest({', '.join(casts)}) AS u({aliases}) ON CONFLICT DO NOTHING RETURNING {pk}")
    # As Django's own inserts do: a refused statement marks the enclosing atomic block for rollback,
    # so the block's exit (owner_scope's restoring of the binding) does not run into the aborted
    # transaction and replace the database's error with "current transaction is aborted".
    # (Django's cursor first: it opens the connection and applies its per-connection setup.)
    with transaction.mark_for_rollback_on_error(using), connection.cursor(), connection.wrap_database_errors, \
            psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, arrays, prepare=False)
        inserted = {row[0] for row in cursor.fetchall()}
    for obj in objs:
        obj._state.adding = False
        obj._state.db = using
    return inserted


def _column(field, objs: list, connection) -> list:
    if isinstance(field, models.BinaryField):
        # bytes go to psycopg as they are; Django's per-value Binary() wrapper cost more than the
        # rest of a row's preparation.
        return [field.pre_save(obj, True) for obj in objs]
    return [field.get_db_prep_save(field.pre_save(obj, True), connection) for obj in objs]
