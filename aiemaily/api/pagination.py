"""Cursor pagination for every list: stable under inserts, opaque cursors, bounded page size.

`limit` and `cursor` are query parameters like any other (aiemaily/api/query.py): a value that is
not a whole number from 1 to 200, or a cursor this server did not hand out, is 400 `invalid_query`.
"""

import re

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from aiemaily.api.errors import InvalidQuery
from aiemaily.api.query import StrictIntegerField

INVALID_CURSOR = "This cursor is not valid: use the `next` or `previous` link of a list answer."


class CreatedCursorPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200
    # What DRF hands out is URL-safe base64 of a short query string, under 200 characters; the
    # bound keeps any valid request line within gunicorn's and nginx's 8 KiB.
    cursor_max_length = 200
    cursor_pattern = r"^[A-Za-z0-9+/=]+$"

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        field = StrictIntegerField(min_value=1, max_value=self.max_page_size)
        try:
            return field.run_validation(raw)
        except exceptions.ValidationError as exc:
            raise InvalidQuery({self.page_size_query_param: exc.detail}) from None

    def decode_cursor(self, request):
        raw = request.query_params.get(self.cursor_query_param)
        if raw is not None and (len(raw) > self.cursor_max_length or not re.fullmatch(self.cursor_pattern, raw)):
            raise InvalidQuery({self.cursor_query_param: [INVALID_CURSOR]})
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound:
            raise InvalidQuery({self.cursor_query_param: [INVALID_CURSOR]}) from None

    def paginate_queryset(self, queryset, request, view=None):
        try:
            return super().paginate_queryset(queryset, request, view)
        except (DjangoValidationError, ValueError):
            # A well-encoded cursor whose position is not a value of the ordering field (a date
            # that is no date): the database never sees it.
            if self.cursor_query_param not in request.query_params:
                raise
            raise InvalidQuery({self.cursor_query_param: [INVALID_CURSOR]}) from None

    def get_paginated_response(self, data):
        return Response({"results": data, "next": self.get_next_link(), "previous": self.get_previous_link()})

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["results", "next", "previous"],
            "properties": {
                "results": schema,
                "next": {"type": "string", "format": "uri", "nullable": True},
                "previous": {"type": "string", "format": "uri", "nullable": True},
            },
        }

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": self.cursor_query_param, "required": False, "in": "query",
                "description": "The opaque cursor from a previous answer's `next` or `previous` link.",
                "schema": {"type": "string", "minLength": 1, "maxLength": self.cursor_max_length,
                           "pattern": self.cursor_pattern},
            },
            {
                "name": self.page_size_query_param, "required": False, "in": "query",
                "description": f"Items per page (default {self.page_size}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size},
            },
        ]
