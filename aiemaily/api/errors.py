"""The JSON error envelope of DESIGN.md: {"error": {"code": "...", "message": "..."}}.

Used by DRF views (exception_handler) and by Django's 404/500 handlers for /api/ paths.
Messages come from our own exception texts, never from request data, so nothing is echoed back.
"""

import logging

from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def error_body(code: str, message: str, **extra) -> dict:
    error = {"code": code, "message": message}
    error.update(extra)
    return {"error": error}


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


def exception_handler(exc, context):
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # an unexpected error: Django logs it and handler500 answers
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body("invalid", "The request has invalid fields.", fields=fields)
    elif isinstance(exc, exceptions.APIException):
        response.data = error_body(_code(exc), _first_message(exc.detail))
    return response


def json_not_found(request, exception=None):
    return JsonResponse(error_body("not_found", "Not found."), status=status.HTTP_404_NOT_FOUND)


def json_server_error(request):
    return JsonResponse(
        error_body("server_error", "Something went wrong on our side; it has been logged."),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
