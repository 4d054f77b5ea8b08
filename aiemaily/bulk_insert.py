"""Many rows in one INSERT whose text does not grow with the row count (PostgreSQL).

Django's bulk_create writes one placeholder per value: a batch of 500 messages is a statement of
some 15,000 placeholders that Django assembles and psycopg then re-parses (its statement cache
only keeps short statements), which cost more of an initial sync than the database's own work.
Here each column travels as one array and the statement is `INSERT … SELECT * FROM unnest(…)`:
the same short text for every batch, values adapted by psycopg's C dumpers. `ON CONFLICT DO
NOTHING RETURNING pk` also says which rows were new, where bulk_create(ignore_conflicts=True)
needs a second query to find out.

Only for tables without array-typed columns (unnest would flatten them).
"""

from django.db import connections


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
    columns = []
    for field in fields:
        db_type = field.db_type(connection)
        if db_type is None or db_type.endswith("]"):
            raise ValueError(f"{meta.label}.{field.name}: no array form for unnest")
        columns.append(db_type)
    arrays = [[field.get_db_prep_save(field.pre_save(obj, True), connection) for obj in objs] for field in fields]
    # Only names and types from the model's own definition go into the text; every value is a parameter.
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    names = ", ".join(quote(f.column) for f in fields)
    unnest = ", ".join(f"%s::{db_type}[]" for db_type in columns)
    sql = f"INSERT INTO {table} ({names}) SELECT * FROM unnest({unnest}) ON CONFLICT DO NOTHING RETURNING {pk}"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, arrays)
        inserted = {row[0] for row in cursor.fetchall()}
    for obj in objs:
        obj._state.adding = False
        obj._state.db = using
    return inserted
