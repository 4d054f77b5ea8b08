"""Idempotency-Key on every mutating /api/v1/ call: the DRF side of aiemaily.idempotency.

The hook: aiemaily/urls.py passes the api_v1 URL list through idempotent_urls(), which rebuilds
every DRF view routed there as a subclass with IdempotentApiMixin first in its MRO. No view opts in
and none can forget to; a test fails if any /api/v1/ view lacks the mixin.

The mixin works inside DRF's own request cycle, so a key is claimed only once the caller is
authenticated, permitted and not throttled (Stripe: a result is kept only if the endpoint started):
  initial()            after DRF's checks: validate the header, fingerprint the request, claim
  handle_exception()   a stored response short-circuits the handler
  finalize_response()  render, then record a 1xx-4xx response in the request's own transaction
Anonymous calls (auth/token, auth/token/refresh) and safe methods ignore the header.
"""

import functools
import re

from django.core.exceptions import ImproperlyConfigured, RequestDataTooBig
from django.db import connection, transaction
from django.http import HttpResponse
from django.urls import URLPattern, URLResolver
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.views import APIView

from aiemaily.api.errors import RequestTooLarge
from aiemaily.idempotency.models import IdempotencyKey
from aiemaily.idempotency.services import KeyInFlight, KeyReused, key_claim, key_record, request_fingerprint

META_KEY = "HTTP_IDEMPOTENCY_KEY"
REPLAYED_HEADER = "Idempotent-Replayed"
MUTATING_METHODS = ("post", "put", "patch", "delete")
_KEY_SHAPE = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, as the model's check constraint says

IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    name="Idempotency-Key", location=OpenApiParameter.HEADER, required=False,
    type={"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
    description="1-255 visible ASCII characters, unique per intended action (a UUID). A retry with the same "
                "key and request replays the first response (`Idempotent-Replayed: true`); the same key "
                "with another request is 422; while the first is running, 409. Keys last 24 h per user.",
)


class InvalidIdempotencyKey(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The Idempotency-Key header must be 1 to 255 visible ASCII characters."
    default_code = "invalid_idempotency_key"


class IdempotencyKeyInFlight(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "A request with this Idempotency-Key is still being processed; retry shortly."
    default_code = "idempotency_key_in_flight"
    wait = 1  # seconds; DRF's exception handler sends it as Retry-After


class IdempotencyKeyReused(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was already used for a different request."
    default_code = "idempotency_key_reused"


IdempotencyBodyTooLarge = RequestTooLarge


class _Replay(Exception):
    """Raised from initial() to answer with a stored response instead of running the handler."""

    def __init__(self, response: HttpResponse):
        super().__init__("replaying a stored response")
        self.response = response


class IdempotentApiMixin:
    _idempotency_claim = None

    def dispatch(self, request, *args, **kwargs):
        if connection.in_atomic_block or not _asks_for_idempotency(request):
            return super().dispatch(request, *args, **kwargs)
        # Without PostgreSQL's per-request transaction (the SQLite default of `make run`), the
        # claim, the view's writes and the recorded response still need one transaction.
        with transaction.atomic():
            response = super().dispatch(request, *args, **kwargs)
            if response.status_code >= 500:
                transaction.set_rollback(True)
        return response

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if _asks_for_idempotency(request) and request.user.is_authenticated and self._handles(request.method):
            self._idempotency_claim = _claim(request)

    def _handles(self, method: str) -> bool:
        # An unsupported method answers 405 without a claim, so the key stays free for a real call.
        return method.lower() in self.http_method_names and hasattr(self, method.lower())

    def handle_exception(self, exc):
        if isinstance(exc, _Replay):
            return exc.response
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if self._idempotency_claim is not None:
            _record(self._idempotency_claim, response)
        return response


def _asks_for_idempotency(request) -> bool:
    return request.method.lower() in MUTATING_METHODS and META_KEY in request.META


def _claim(request):
    key = request.META[META_KEY]
    if not _KEY_SHAPE.fullmatch(key):
        raise InvalidIdempotencyKey()
    fingerprint = request_fingerprint(
        method=request.method, path=request.path, query=request.META.get("QUERY_STRING", ""),
        body=_raw_body(request),
    )
    try:
        outcome = key_claim(owner=request.user, key=key, fingerprint=fingerprint)
    except KeyInFlight:
        raise IdempotencyKeyInFlight() from None
    except KeyReused:
        raise IdempotencyKeyReused() from None
    if isinstance(outcome, IdempotencyKey):
        raise _Replay(_replay_response(outcome))
    return outcome


def _raw_body(request) -> bytes:
    # Read before DRF parses (nothing earlier in DRF's cycle touches the body); DRF then parses
    # the same bytes from Django's cache.
    try:
        return request.body
    except RequestDataTooBig:
        raise IdempotencyBodyTooLarge() from None


def _replay_response(stored: IdempotencyKey) -> HttpResponse:
    response = HttpResponse(bytes(stored.response_body), status=stored.response_status)
    del response["Content-Type"]  # exactly the stored headers: a 204 replays without one, as it was sent
    for name, value in stored.response_headers:
        response[name] = value
    response[REPLAYED_HEADER] = "true"
    return response


def _record(claim, response) -> None:
    if response.streaming:
        raise TypeError("a response to a call with an Idempotency-Key must not stream: it cannot be replayed")
    if hasattr(response, "render"):
        response.render()  # DRF renders lazily; the bytes recorded must be the bytes sent
    if response.status_code >= 500:
        return  # not recorded: the transaction rolls back (OwnerScopeMiddleware) and the key is free
    key_record(claim=claim, status=response.status_code, body=response.content, headers=response.items())


# --- installing the mixin ---------------------------------------------------------------------------

_PLAIN_CALLBACK = APIView.as_view()  # what APIView.as_view() returns: csrf_exempt around Django's view


def idempotent_urls(patterns) -> list:
    """`patterns`, with every DRF view in them (includes too) rebuilt with IdempotentApiMixin."""
    return [_idempotent_pattern(pattern) for pattern in patterns]


def _idempotent_pattern(pattern):
    if isinstance(pattern, URLResolver):
        return URLResolver(pattern.pattern, idempotent_urls(pattern.url_patterns), pattern.default_kwargs,
                           pattern.app_name, pattern.namespace)
    view_class = getattr(pattern.callback, "cls", None)
    if view_class is None or not issubclass(view_class, APIView) or issubclass(view_class, IdempotentApiMixin):
        return pattern
    if not _is_plain_callback(pattern.callback):
        # Rebuilding the view from its class would silently drop a decorator applied to the
        # as_view() result (or a ViewSet's action map), so refuse at start-up instead.
        raise ImproperlyConfigured(
            f"{view_class.__name__} under /api/v1/: decorate the view class (method_decorator on dispatch), "
            "not its as_view() result; ViewSets are not supported"
        )
    callback = idempotent_view_class(view_class).as_view(**pattern.callback.initkwargs)
    return URLPattern(pattern.pattern, callback, pattern.default_args, pattern.name)


def _is_plain_callback(callback) -> bool:
    inner = getattr(callback, "__wrapped__", None)
    return (getattr(callback, "__code__", None) is _PLAIN_CALLBACK.__code__
            and getattr(inner, "__code__", None) is _PLAIN_CALLBACK.__wrapped__.__code__)


def idempotent_view_class(view_class):
    """`view_class` with the mixin first; same name, module and docs, so the schema reads the same."""
    cls = type(view_class.__name__, (IdempotentApiMixin, view_class), {
        "__module__": view_class.__module__, "__qualname__": view_class.__qualname__, "__doc__": view_class.__doc__,
    })
    for name in MUTATING_METHODS:
        if hasattr(view_class, name):
            setattr(cls, name, _documented_handler(cls, name))
    return cls


def _documented_handler(cls, name: str):
    """A pass-through handler that adds the Idempotency-Key header to the method's OpenAPI schema."""
    parent = getattr(super(cls, cls), name)

    def handler(self, request, *args, **kwargs):
        # Looked up per call, so the parent's current handler is what runs.
        return getattr(super(cls, self), name)(request, *args, **kwargs)

    functools.update_wrapper(handler, parent)
    # extend_schema writes into `kwargs`; a copy keeps the parent's own schema untouched.
    handler.kwargs = dict(getattr(parent, "kwargs", {}))
    return extend_schema(parameters=[IDEMPOTENCY_KEY_PARAMETER])(handler)
