"""Query parameters, read one way everywhere: a serializer per view, strict types, 400 `invalid_query`.

A view never reads `request.query_params[...]` itself: it declares a serializer of its parameters,
passes it to `extend_schema(parameters=[TheQuery])` (so the OpenAPI schema lists them with their
types), and calls `query_params(TheQuery, request)`. The pagination's `limit` and `cursor` follow
the same rule in aiemaily/api/pagination.py.

The fields are strict on purpose: a client (or a fuzzer) that sends `limit=5.0`, `unread=1` or
`unread=null` learns at once that the value is wrong, instead of getting a list it did not ask
for. A parameter left out is "no filter"; a parameter present with an empty value is a bad value,
except where a view says otherwise (`q=` on messages: an empty search box searches nothing).
"""

import re

from rest_framework import serializers

from aiemaily.api.errors import InvalidQuery


class StrictBooleanField(serializers.BooleanField):
    """Only `true` or `false` (what the schema says a boolean query parameter looks like)."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data):
        if data in ("true", "false", True, False):
            return data in ("true", True)
        self.fail("invalid")


class StrictIntegerField(serializers.IntegerField):
    """Decimal digits only: DRF's IntegerField would also take `5.0` and ` 5`."""

    def to_internal_value(self, data):
        if isinstance(data, str) and not re.fullmatch(r"-?[0-9]{1,18}", data):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictUUIDField(serializers.UUIDField):
    """The canonical 8-4-4-4-12 form only (DRF's UUIDField also accepts URNs and bare hex)."""

    default_error_messages = {"invalid": "Must be a UUID such as 123e4567-e89b-12d3-a456-426614174000."}

    def __init__(self, **kwargs):
        kwargs.setdefault("format", "hex_verbose")
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, str) and not re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", data):
            self.fail("invalid")
        return super().to_internal_value(data)


def query_params(serializer_class, request) -> dict:
    """The validated query parameters of `request`, or 400 `invalid_query` naming each bad one."""
    # A plain dict of the first values: DRF reads a QueryDict like an HTML form, where an empty
    # value means "left out", and that would hide `limit=` or `unread=` from the validation.
    raw = {name: request.query_params.get(name) for name in request.query_params}
    data = serializer_class(data=raw)
    if not data.is_valid():
        raise InvalidQuery(data.errors)
    return data.validated_data
