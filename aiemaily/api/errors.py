"""The JSON error envelope of DESIGN.md: {"error": {"code": "...", "message": "..."}}, one mechanism.

Every error under /api/ leaves through here:
  - DRF views: `exception_handler` (settings.REST_FRAMEWORK). Django's own exceptions raised in a
    view (Http404 from get_object_or_404/owned_or_404, PermissionDenied) are turned into their DRF
    equivalents first, so they get the envelope too, with our own message, never the model's name.
  - A path that matches no route (also a malformed id that fails a <uuid:…> converter): the
    catch-all `api_not_found` route at the end of aiemaily/urls.py, so even DEBUG answers JSON.
  - Django's handler404/handler500 for /api/ paths (aiemaily/views.py) use `json_not_found` and
    `json_server_error`.
Codes: `invalid` (body fields, with "fields"), `invalid_query` (query parameters, with "fields"),
`not_found`, `not_authenticated`/`authentication_failed`/`token_not_valid`, `permission_denied`,
`method_not_allowed`, `throttled`, `parse_error`, `unsupported_media_type`, the Idempotency-Key
codes, and a few view-specific ones (see docs/api.md). Messages come from our own exception texts,
never from request data, so nothing is echoed back.
"""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def error_body(code: str, message: str, **extra) -> dict:
    error = {"code": code, "message": message}
    error.update(extra)
    return {"error": error}


class InvalidQuery(exceptions.APIException):
    """A query parameter that does not fit its declared type or range: 400 `invalid_query`.

    Raised by aiemaily.api.query.query_params() and by the pagination (limit, cursor); `fields`
    maps each bad parameter to its messages, like a body's `invalid`.
    """

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_query"
    default_detail = "A query parameter is not valid."

    def __init__(self, fields: dict):
        super().__init__()
        self.fields = {name: [str(m) for m in (messages if isinstance(messages, list) else [messages])]
                       for name, messages in fields.items()}


class RequestTooLarge(exceptions.APIException):
    """A body over DATA_UPLOAD_MAX_MEMORY_SIZE (Django's RequestDataTooBig): 413, not Django's HTML 400."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "request_too_large"


def _first_message(detail) -> str:
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    if isinstance(detail, dict):
        if "detail" in detail:
            return _first_message(detail["detail"])
        if "messages" in detail and detail["messages"]:
            return _first_message(detail["messages"][0].get("message", ""))
        return _first_message(next(iter(detail.values()), ""))
    return str(detail)


def _code(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    if isinstance(codes, str):
        return codes
    if isinstance(codes, dict) and isinstance(codes.get("code"), str):
        return codes["code"]
    return exc.default_code


def _as_api_exception(exc):
    # Http404's text names the model ("No Message matches the given query."): replaced, not passed on.
    if isinstance(exc, Http404):
        return exceptions.NotFound("Not found.")
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, RequestDataTooBig):
        return RequestTooLarge()
    return exc


def exception_handler(exc, context):
    exc = _as_api_exception(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # an unexpected error: Django logs it and handler500 answers
    if isinstance(exc, InvalidQuery):
        response.data = error_body(exc.default_code, "A query parameter is not valid.", fields=exc.fields)
    elif isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body("invalid", "The request has invalid fields.", fields=fields)
    else:
        response.data = error_body(_code(exc), _first_message(exc.detail))
    return response


def json_not_found(request, exception=None):
    return JsonResponse(error_body("not_found", "Not found."), status=status.HTTP_404_NOT_FOUND)


@csrf_exempt  # it changes nothing; else a DELETE to a malformed id answered CSRF's HTML 403
def api_not_found(request, *args, **kwargs):
    """The last route under /api/: whatever matched nothing (a malformed id too) is a JSON 404, even with DEBUG."""
    return json_not_found(request)


def json_service_unavailable(request):
    """A dependency (database, broker, KMS) is down for a moment: retry (aiemaily/ops/outage.py)."""
    return JsonResponse(
        error_body("service_unavailable", "The service is briefly unavailable; try again in a moment."),
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
    )


def json_server_error(request):
    return JsonResponse(
        error_body("server_error", "Something went wrong on our side; it has been logged."),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
