"""The OpenAPI schema says what the server does: Bearer JWT, every error status with its envelope.

drf-spectacular documents the success answers from each view's serializers. What every view shares
is added here, in one place, from what the operation has (so no view can forget it):
  400  a request body, a query parameter or the Idempotency-Key header (every mutating call)
  401  always: a missing or bad token; auth/token answers it for wrong credentials
  404  a path parameter (a missing, malformed or other owner's id all look the same)
  409, 422, 413  the Idempotency-Key outcomes of a mutating call (aiemaily/api/idempotency.py)
  415  a request body in another media type than JSON
  414  a query longer than the schema allows (the HTTP server's own HTML answer, before Django)
  429  always: the rate limits
A view adds its own (403 on DELETE account, 404 for an id in the body, 502 from an AI provider)
with `extend_schema(responses={code: ERROR})`. Each answer is the `Error` component:
{"error": {"code", "message", "fields"?}} (aiemaily/api/errors.py). `make openapi` writes the
result to docs/openapi.yaml, and tests/project/test_openapi.py fails when the two differ.
"""

from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class OwnerBoundJWTScheme(OpenApiAuthenticationExtension):
    target_class = "aiemaily.api.authentication.OwnerBoundJWTAuthentication"
    name = "jwtAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


class ErrorDetail(serializers.Serializer):
    code = serializers.CharField(help_text="machine-readable, e.g. `invalid`, `invalid_query`, `not_found`")
    message = serializers.CharField(help_text="for people; never repeats what the request sent")
    fields = serializers.DictField(
        required=False, help_text="`invalid` and `invalid_query` only: each bad field (or parameter) and its "
                                  "messages; nested for nested objects, keyed by index for list items")


class Error(serializers.Serializer):
    error = ErrorDetail()


ERROR = Error

_DESCRIPTIONS = {
    "400": "The request is not valid: a body field (`invalid`), a query parameter (`invalid_query`), the JSON "
           "itself (`parse_error`) or the Idempotency-Key header (`invalid_idempotency_key`).",
    "401": "No valid access token (`not_authenticated`, `token_not_valid`), or wrong credentials.",
    "403": "Not allowed.",
    "404": "No such object for this user (`not_found`); another user's object looks the same.",
    "409": "A request with this Idempotency-Key is still running (`idempotency_key_in_flight`); retry after "
           "Retry-After seconds.",
    "413": "The request body is too large (`request_too_large`).",
    "415": "The body is not JSON (`unsupported_media_type`).",
    "422": "This Idempotency-Key was used for a different request (`idempotency_key_reused`).",
    "429": "Too many requests (`throttled`); retry after Retry-After seconds.",
    "502": "The AI provider failed (`ai_*`).",
}
MUTATING = ("POST", "PUT", "PATCH", "DELETE")
# A query longer than the schema allows may make the request line longer than the HTTP server takes
# (8 KiB: gunicorn, nginx). That server answers before Django, in its own words: documented as it is.
# Every valid query fits (tests/project/test_openapi.py adds up the longest).
TOO_LONG = {"description": "The request line is longer than 8 KiB: only a query the schema refuses can be "
                           "(the HTTP server's own answer, not the error envelope).",
            "content": {"text/html": {"schema": {"type": "string"}}}}
# At least one character that is not whitespace (ECMA and Python agree on `\S`).
NOT_ONLY_WHITESPACE = r"\S"


def error(description: str) -> OpenApiResponse:
    """An error answer a view documents itself, with its own description."""
    return OpenApiResponse(response=Error, description=description)


class ApiAutoSchema(AutoSchema):
    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        # DRF strips a CharField's input before its checks, so "  " arrives as "" and is refused as
        # blank: the schema must say so, or a whitespace-only value would look valid to clients.
        if (direction == "request" and isinstance(field, serializers.CharField) and field.trim_whitespace
                and not field.allow_blank and schema.get("type") == "string" and "pattern" not in schema
                and not any(isinstance(v, RegexValidator) for v in field.validators)):  # has its own pattern
            schema["pattern"] = NOT_ONLY_WHITESPACE
        return schema

    def get_request_serializer(self):
        # DRF and spectacular take DELETE to have no body; ours may (DELETE account: the password),
        # and says so with extend_schema(request=…), which is looked up before this.
        if self.method == "DELETE":
            return None
        return super().get_request_serializer()

    def _get_request_body(self, direction="request"):
        if self.method != "DELETE" or self.get_request_serializer() is None:
            return super()._get_request_body(direction)
        self.method = "POST"
        try:
            return super()._get_request_body(direction)
        finally:
            self.method = "DELETE"

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None or not path.startswith("/api/"):
            return operation
        responses = operation["responses"]
        for code in self._error_statuses(operation):
            if code not in responses:
                responses[code] = self._get_response_for_code(error(_DESCRIPTIONS[code]), code)
        if any(p["in"] == "query" for p in operation.get("parameters", [])):
            responses["414"] = TOO_LONG
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _error_statuses(self, operation) -> list[str]:
        parameters = operation.get("parameters", [])
        codes = ["401", "429"]
        if "requestBody" in operation:
            codes += ["400", "415"]
        if any(p["in"] in ("query", "header") for p in parameters):
            codes.append("400")
        if any(p["in"] == "path" for p in parameters):
            codes.append("404")
        if "requestBody" in operation:
            codes.append("413")
        if self.method in MUTATING and operation.get("security") and operation["security"] != [{}]:
            codes += ["400", "409", "413", "422"]
        return codes


# OpenAPI links: where a client (and the fuzzer's stateful phase) gets the ids the other calls take.
# (source operationId, status, JSON pointer to the id in its answer) -> [(target operationId, path parameter)]
_LIST_FIRST = "/results/0/id"
LINKS = {
    ("connections_list", "200", _LIST_FIRST): "connection_id",
    ("connections_create", "201", "/id"): "connection_id",
    ("messages_list", "200", _LIST_FIRST): "message_id",
    ("shared_messages_list", "200", _LIST_FIRST): "message_id",
    ("outbox_list", "200", _LIST_FIRST): "outbox_id",
    ("outbox_create", "202", "/id"): "outbox_id",
    ("ai_keys_list", "200", _LIST_FIRST): "key_id",
    ("ai_keys_create", "201", "/id"): "key_id",
    ("audit_list", "200", _LIST_FIRST): "event_id",
    ("delegations_list", "200", _LIST_FIRST): "delegation_id",
    ("messages_delegate_create", "201", "/id"): "delegation_id",
    ("drafts_create", "201", "/id"): "draft_id",
    ("drafts_create", "202", "/id"): "draft_id",
}
# shared/messages ids are another user's messages: they link only to the shared/ reads.
_SHARED_ONLY = {"shared_messages_list": "/api/v1/shared/"}


def add_links(result, generator, request, public):
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS): the LINKS above, on each answer."""
    operations = {op["operationId"]: (path, op) for path, item in result["paths"].items() for op in item.values()}
    for (source, status, pointer), parameter in LINKS.items():
        if source not in operations:
            continue
        _, source_op = operations[source]
        links = {}
        for target, (path, _) in sorted(operations.items()):
            if target == source or "{" + parameter + "}" not in path:
                continue
            if path.startswith("/api/v1/shared/") != (source in _SHARED_ONLY):
                continue
            links[target] = {"operationId": target, "parameters": {parameter: f"$response.body#{pointer}"}}
        if links and status in source_op["responses"]:
            source_op["responses"][status]["links"] = links
    return result
