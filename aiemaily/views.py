"""Site-wide pages: home, dashboard, settings, and the error handlers (health: aiemaily/ops/views.py)."""

import logging
import sys

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string

from aiemaily.api.errors import json_not_found, json_server_error, json_service_unavailable
from aiemaily.dashboard import dashboard_context
from aiemaily.ops.outage import RETRY_AFTER_SECONDS, is_dependency_outage

logger = logging.getLogger(__name__)


def home(request):
    if request.user.is_authenticated:
        return redirect("dashboard")
    return render(request, "home.html")


@login_required
def dashboard(request):
    return render(request, "dashboard.html", dashboard_context(request.user))


@login_required
def settings_index(request):
    """Every setting in one place; each section links to its own page."""
    return render(request, "settings.html")


def not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return json_not_found(request, exception)
    return render(request, "404.html", status=404)


def server_error(request):
    # Django calls handler500 inside its `except` block: the exception is the one being handled.
    if is_dependency_outage(sys.exc_info()[1]):
        return service_unavailable(request)
    if request.path.startswith("/api/"):
        return json_server_error(request)
    return render(request, "500.html", status=500)


def service_unavailable(request):
    """503 for a dependency outage. The page is rendered without the request's context: the
    context processors would reach for the session and the user, i.e. the database that is down."""
    if request.path.startswith("/api/"):
        response = json_service_unavailable(request)
    else:
        response = HttpResponse(render_to_string("503.html"), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
