"""Connection pages: list, add an IMAP mailbox, connect Google/Microsoft, details, disconnect."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_POST
from rest_framework.exceptions import APIException

from billing.selectors import limit_reason
from billing.services import PlanLimitReached
from mail import services
from mail.models import Connection
from mail.selectors import connection_get, connection_list
from mail.web.forms import ImapConnectionForm, PasswordUpdateForm
from mail.web.oauth import oauth_start
from secrets_vault.crypto import SecretStr
from secrets_vault.oauth import scopes


def _mailbox_locked(user) -> str:
    """Why the plan allows no further mailbox ("" if it does): shown with an upgrade link. The
    services enforce the same limit; this only tells the user before they fill in a form."""
    return limit_reason(owner=user, feature="mailboxes", current=connection_list(owner=user).count())


@login_required
def connection_index(request):
    return render(request, "mail/connections.html", {"connections": connection_list(owner=request.user),
                                                     "locked": _mailbox_locked(request.user)})


@login_required
@sensitive_post_parameters("imap_password", "smtp_password")
def connection_add_imap(request):
    form = ImapConnectionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        values = form.cleaned_data["validated"]
        try:
            connection = services.connection_create_imap(owner=request.user, email=values["email"],
                                                         imap=values["imap"], smtp=values["smtp"])
        except PlanLimitReached:
            return render(request, "mail/add_imap.html", {"form": form, "locked": _mailbox_locked(request.user)},
                          status=403)
        messages.info(request, "Checking your mailbox: the login test runs in the background.")
        return redirect("connections:detail", connection_id=connection.pk)
    return render(request, "mail/add_imap.html", {"form": form, "locked": _mailbox_locked(request.user)},
                  status=400 if form.errors else 200)


@login_required
@require_POST
def connection_start_oauth(request, provider):
    if provider not in ("gmail", "microsoft"):
        return render(request, "404.html", status=404)

    capabilities = [c for c in request.POST.getlist("capabilities") if c in scopes.CAPABILITIES] or None
    existing = None
    if request.POST.get("connection"):
        existing = connection_get(owner=request.user, connection_id=request.POST["connection"])
        if existing.provider != provider:
            return render(request, "404.html", status=404)
    kwargs = {"connection": existing} if existing is not None else {}
    try:
        _, authorize_url = oauth_start(
            owner=request.user, provider=provider, capabilities=capabilities,
            redirect_uri=request.build_absolute_uri(f"/connections/oauth/{provider}/callback"), **kwargs)
    except APIException as exc:  # a refused upgrade, a disconnected connection, OAuth not configured
        messages.error(request, " ".join(_flatten(exc.detail)) or "This connection cannot be authorised now.")
        return redirect("connections:detail", connection_id=existing.pk) if existing else redirect(
            "connections:index")
    return redirect(authorize_url)


def _flatten(detail) -> list[str]:
    if isinstance(detail, dict):
        return [text for value in detail.values() for text in _flatten(value)]
    if isinstance(detail, list):
        return [text for value in detail for text in _flatten(value)]
    return [str(detail)]


def _scope_rows(connection: Connection) -> list[dict]:
    requested, granted = set(connection.requested_scopes), set(connection.granted_scopes)
    rows = []
    for scope in scopes.describe(connection.provider, sorted(requested | granted)):
        rows.append({"scope": scope, "requested": scope.name in requested, "granted": scope.name in granted})
    return rows


@login_required
def connection_detail(request, connection_id):
    connection = connection_get(owner=request.user, connection_id=connection_id)
    context = {
        "connection": connection,
        "scope_rows": _scope_rows(connection),
        "capabilities": (set(scopes.CAPABILITIES) if connection.provider == "imap"
                         else scopes.capabilities_granted(connection.provider, connection.granted_scopes)),
        "all_capabilities": scopes.CAPABILITIES,
        "password_form": PasswordUpdateForm(),
        "sync": connection.sync_state or {},
    }
    return render(request, "mail/connection_detail.html", context)


@login_required
@require_GET
def connection_status(request, connection_id):
    """What the page polls while a connection is being checked (session-authenticated JSON)."""
    connection = connection_get(owner=request.user, connection_id=connection_id)
    state = connection.sync_state or {}
    return JsonResponse({"status": connection.status, "last_error": connection.last_error,
                         "sync": {key: state.get(key) for key in ("state", "done", "total", "rate", "last_error")}})


@login_required
@require_POST
def connection_sync_now(request, connection_id):
    connection = connection_get(owner=request.user, connection_id=connection_id)
    if connection.status != Connection.Status.ACTIVE or (connection.provider != "imap"
                                                         and connection.oauth_secret_id is None):
        messages.error(request, "Only an active mailbox can sync.")
    else:
        services.connection_sync_dispatch(connection=connection)
        services.connection_sync_mark_queued(connection=connection)
        messages.info(request, "Sync started.")
    return redirect("connections:detail", connection_id=connection.pk)


@login_required
@require_POST
@sensitive_post_parameters("imap_password", "smtp_password")
def connection_update_password(request, connection_id):
    connection = connection_get(owner=request.user, connection_id=connection_id)
    form = PasswordUpdateForm(request.POST)
    if connection.provider != "imap" or not form.is_valid():
        messages.error(request, "Enter at least one new password.")
        return redirect("connections:detail", connection_id=connection.pk)
    services.connection_update_password(
        owner=request.user, connection=connection,
        imap_password=SecretStr(form.cleaned_data["imap_password"]) if form.cleaned_data["imap_password"] else None,
        smtp_password=SecretStr(form.cleaned_data["smtp_password"]) if form.cleaned_data["smtp_password"] else None,
    )
    messages.info(request, "New password saved; checking the login again.")
    return redirect("connections:detail", connection_id=connection.pk)


@login_required
@require_POST
def connection_disconnect(request, connection_id):
    connection = connection_get(owner=request.user, connection_id=connection_id)
    keep_mail = request.POST.get("keep_mail") == "yes"
    services.connection_disconnect(owner=request.user, connection=connection, keep_mail=keep_mail)
    messages.success(request, "Disconnected. Its credentials were destroyed"
                     + ("; synced mail was kept." if keep_mail else " and its mail deleted."))
    return redirect("connections:index")
