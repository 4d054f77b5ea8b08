"""schemathesis hooks for scripts/api_fuzz.py (loaded through scripts/schemathesis.toml).

Pagination cursors are opaque: only a `next` or `previous` link of this server's answers is a valid
one, which no schema can describe, so a generated cursor of the shape the schema allows
is left out of the request instead of being reported as "a valid value rejected". Cursors of another
shape are still sent, and forged cursors are tested in tests/project/test_api_errors.py.

An Idempotency-Key is one per intended action: the same key with another request is 422 by design
(tests/project/test_idempotency.py). A generated key that fits the schema gets a unique suffix, so two
different cases never share one; keys that do not fit are sent as generated.
"""

import re
import uuid

import schemathesis

CURSOR_SHAPE = re.compile(r"[A-Za-z0-9+/=]{1,200}")  # aiemaily.api.pagination.CreatedCursorPagination
KEY_SHAPE = re.compile(r"[\x21-\x7e]{1,255}")  # aiemaily.api.idempotency._KEY_SHAPE


@schemathesis.hook
def before_call(context, case, **kwargs):
    cursor = (case.query or {}).get("cursor")
    if isinstance(cursor, str) and CURSOR_SHAPE.fullmatch(cursor):
        del case.query["cursor"]
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and KEY_SHAPE.fullmatch(key):
        headers["Idempotency-Key"] = f"{key[:218]}-{uuid.uuid4()}"
