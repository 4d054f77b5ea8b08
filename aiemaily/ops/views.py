"""/healthz (liveness), /readyz (readiness) and /metrics (Prometheus text).

Details are for operators only: a request straight to the process from the machine itself (loopback,
no proxy header — nginx always adds X-Forwarded-For) or from a signed-in staff member. Everyone else
gets only ready / not ready, and /metrics answers them 404 like any unknown path.
"""

import ipaddress

from django.http import Http404, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from aiemaily.ops.metrics import render
from aiemaily.ops.readiness import readiness


def is_operator(request) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    if "HTTP_X_FORWARDED_FOR" in request.META:
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


@never_cache
@require_GET
def healthz(request):
    """Liveness: the process answers. Dependencies are /readyz's business (a database outage must not
    make an orchestrator restart every healthy web process)."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request):
    checks = readiness()
    ready = all(checks.values())
    body = {"status": "ready" if ready else "not ready"}
    if is_operator(request):
        body["checks"] = {name: "ok" if ok else "unavailable" for name, ok in checks.items()}
    return JsonResponse(body, status=200 if ready else 503)


@never_cache
@require_GET
def metrics(request):
    if not is_operator(request):
        raise Http404
    return HttpResponse(render(), content_type="text/plain; version=0.0.4; charset=utf-8")
