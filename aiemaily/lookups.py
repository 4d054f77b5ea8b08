"""Query pieces that mean the same on PostgreSQL and on SQLite (the embedded default of `make run`).

Django's JSONField `contains` lookup exists only on PostgreSQL (and MySQL): on SQLite it raises
NotSupportedError, which once made `GET /api/v1/messages?label=x` a 500 under `make run`. A filter
written with these works on both; tests/test_api_sqlite.py runs the message filters on SQLite.
"""

import json

from django.db.models import Lookup


class JSONArrayHas(Lookup):
    """`JSONArrayHas(F("labels"), "Work")`: the JSON array in the column has that string as an element.

    Used as an expression (`qs.filter(JSONArrayHas(F("labels"), label))`), not registered on
    JSONField, so nobody mistakes it for Django's own `contains`.
    """

    lookup_name = "array_has"
    prepare_rhs = False

    def __init__(self, lhs, rhs):
        if not isinstance(rhs, str):
            raise TypeError("JSONArrayHas compares with a string")
        super().__init__(lhs, rhs)

    def as_sql(self, compiler, connection):
        # SQLite's JSON1 (always built into Python's sqlite3 since 3.38; Debian's has it).
        # `lhs` is the column as Django compiled it; the value is always a bound parameter.
        lhs, lhs_params = self.process_lhs(compiler, connection)
        sql = f"EXISTS (SELECT 1 FROM json_each({lhs}) AS elements WHERE elements.value = %s)"  # noqa: S608
        return sql, [*lhs_params, self.rhs]

    def as_postgresql(self, compiler, connection):
        # jsonb containment, which a GIN index on the column can serve.
        lhs, lhs_params = self.process_lhs(compiler, connection)
        return f"({lhs})::jsonb @> %s::jsonb", [*lhs_params, json.dumps([self.rhs])]
