"""Mailbox pages: the message list, one message (sandboxed) with its actions, compose, outbox."""

import datetime
import html
import uuid
from email.utils import parseaddr
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from rest_framework.exceptions import ValidationError

from aiemaily.security.mailframe import render_message_frame
from mail import blobstore, services
from mail.assistant.selectors import triage_by_message
from mail.attachments import attachment_response
from mail.models import LABEL, Connection, Delegation, OutboxMessage
from mail.parsing import attachment, body_parts, thread_source
from mail.selectors import (
    connection_list,
    folder_list,
    message_actionable,
    message_get,
    message_list,
    message_page,
    outbox_get,
    outbox_list,
    thread_sizes,
)
from mail.web.assistant import draft_for_compose, summary_context

PAGE = 50


TRIAGE_VIEWS = (("needs_reply", "Needs reply"), ("fyi", "FYI"), ("newsletter", "Newsletters"),
                ("notification", "Notifications"))


def _list_filters(request) -> dict:
    """The list's filters from the query string; anything unknown or malformed is simply not applied."""
    get = request.GET
    filters = {"q": (get.get("q") or "").strip()[:200]}
    if get.get("connection"):
        try:
            filters["connection"] = uuid.UUID(get["connection"])
        except ValueError:
            pass
    if get.get("folder"):
        filters["folder"] = get["folder"][:500]
    if get.get("label") and LABEL.match(get["label"]):
        filters["label"] = get["label"]
    if get.get("category") in dict(TRIAGE_VIEWS):
        filters["category"] = get["category"]
    if get.get("unread") == "1":
        filters["unread"] = True
    return filters


def _cursor(value: str | None):
    """`before=<iso date or ->_<uuid>`; a forged or stale cursor shows the first page, never an error."""
    if not value or "_" not in value:
        return None
    stamp, _, pk = value.rpartition("_")
    try:
        date = None if stamp == "-" else datetime.datetime.fromisoformat(stamp)
        if date is not None and date.tzinfo is None:
            return None
        return date, uuid.UUID(pk)
    except ValueError:
        return None


@login_required
def mailbox(request):
    """The three panes: mailboxes, folders and triage views | the list | the selected message."""
    filters = _list_filters(request)
    items, more = message_page(owner=request.user, filters=filters, before=_cursor(request.GET.get("before")),
                               size=PAGE)
    sizes = thread_sizes(owner=request.user, thread_ids=[m.thread_id for m in items])
    triage = triage_by_message(owner=request.user, message_ids=[m.pk for m in items])
    for item in items:
        item.thread_size = sizes.get(item.thread_id, 1)
        item.triage_category, item.triage_priority = triage.get(item.pk, ("", ""))
    keep = {k: v for k, v in request.GET.items() if k in ("q", "connection", "folder", "label", "category", "unread")}
    next_query = None
    if more:
        last = items[-1]
        stamp = last.date.isoformat() if last.date else "-"
        next_query = urlencode({**keep, "before": f"{stamp}_{last.pk}"})
    selected = None
    if request.GET.get("m"):
        try:
            selected = message_get(owner=request.user, message_id=uuid.UUID(request.GET["m"]))
        except (ValueError, Http404):
            selected = None
    context = {
        "items": items, "q": filters["q"], "filters": filters, "keep": urlencode(keep), "next_query": next_query,
        "connections": connection_list(owner=request.user), "folders": folder_list(owner=request.user),
        "triage_views": TRIAGE_VIEWS, "selected": selected, "poll_seconds": settings.AIEMAILY_UI_POLL_SECONDS,
        "newest": f"{items[0].date.isoformat()}_{items[0].pk}" if items and items[0].date else "",
    }
    if selected is not None:
        try:
            context["frame"] = _frame(request, blobstore.get(request.user.pk, selected.blob_key), selected.subject)
        except blobstore.BlobError:
            context["frame"] = None
    return render(request, "mail/mailbox.html", context)


@login_required
@require_GET
def mailbox_updates(request):
    """How many messages arrived after the newest one the page shows, under the same filters (polled by
    static/js/mailbox.js to offer "N new messages" without reloading under the reader's feet)."""
    after = _cursor(request.GET.get("after"))
    if after is None or after[0] is None:
        return JsonResponse({"new": 0})
    filters = _list_filters(request)
    newer = message_list(owner=request.user, filters=filters).filter(date__gt=after[0]).values("id")[:100]
    return JsonResponse({"new": len(newer)}, headers={"Cache-Control": "no-store"})


def _frame(request, raw: bytes, subject: str):
    parts = body_parts(raw)
    body = parts["body_html"] or f"<pre>{html.escape(parts['body_text'])}</pre>"
    return render_message_frame(request, body, load_images=request.GET.get("images") == "1",
                                title=f"Message: {subject}")


@login_required
def message_view(request, message_id):
    message = message_get(owner=request.user, message_id=message_id)
    try:
        raw = services.message_body_open(reader=request.user, message=message, view="message page")
        frame = _frame(request, raw, message.subject)
        parts = body_parts(raw)
    except blobstore.BlobError:
        frame, parts = None, {"attachments": [], "malformed": ""}
    context = {"message": message, "frame": frame, "images_loaded": request.GET.get("images") == "1",
               "attachments": parts["attachments"], "malformed": message.parse_error or parts["malformed"],
               "thread_source": thread_source(message.thread_id),
               "permissions": Delegation.Permission.choices, **summary_context(request, message)}
    return render(request, "mail/message_view.html", context)


@login_required
@require_GET
def message_attachment(request, message_id, n):
    """Download one attachment: the owner's message only (another owner's is 404), decrypted here."""
    message = message_get(owner=request.user, message_id=message_id)
    try:
        found = attachment(blobstore.get(request.user.pk, message.blob_key), n)
    except blobstore.BlobError:
        found = None
    if found is None:
        raise Http404("no such attachment")
    return attachment_response(*found)


@login_required
@require_POST
def message_act(request, message_id, action):
    message = message_get(owner=request.user, message_id=message_id)
    if not message_actionable(message):
        flash.error(request, "This mailbox cannot be changed right now.")
        return redirect("mailbox:message", message_id=message.pk)
    if action == "archive":
        services.message_action_queue(message=message, action="archive", params={})
        flash.info(request, "Archiving…")
    elif action == "read":
        unread = request.POST.get("unread") == "1"
        services.message_action_queue(message=message, action="read", params={"unread": unread})
        flash.info(request, "Marked unread." if unread else "Marked read.")
    elif action == "label":
        label = (request.POST.get("label") or "").strip()
        if not LABEL.match(label):
            flash.error(request, "Labels are 1-64 letters, digits, '.', '_', '-' or '$'.")
        else:
            services.message_action_queue(message=message, action="labels", params={"add": [label], "remove": []})
            flash.info(request, f"Label {label} added.")
    else:
        return render(request, "404.html", status=404)
    return redirect("mailbox:message", message_id=message.pk)


@login_required
@require_POST
def message_delegate(request, message_id):
    message = message_get(owner=request.user, message_id=message_id)
    permission = request.POST.get("permission") if request.POST.get("permission") in Delegation.Permission.values \
        else "read"
    try:
        services.delegation_grant(owner=request.user, message=message,
                                  email=(request.POST.get("email") or "")[:254], permission=permission)
        flash.success(request, "Thread shared. You can revoke it from your shared threads at any time.")
    except ValidationError:
        flash.error(request, "Enter the exact address of another Aiemaily user.")
    return redirect("mailbox:message", message_id=message.pk)


class ComposeForm(forms.Form):
    connection = forms.ModelChoiceField(queryset=Connection.objects.none(), label="From")
    to = forms.CharField(max_length=2000, help_text="Comma-separated addresses")
    cc = forms.CharField(max_length=2000, required=False)
    subject = forms.CharField(max_length=998, required=False)
    body_text = forms.CharField(widget=forms.Textarea, max_length=1_000_000, required=False, label="Message")
    in_reply_to = forms.CharField(max_length=998, required=False, widget=forms.HiddenInput)
    # One key per rendered form (mail/services.py outbox_submit_form): a double-click or a browser
    # resubmit sends the same key and finds the first outbox row.
    form_key = forms.UUIDField(required=False, widget=forms.HiddenInput, label="")

    def __init__(self, *args, owner=None, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial.setdefault("form_key", uuid.uuid4())
        # IMAP sends over SMTP; Gmail and Microsoft through their APIs once signed in.
        self.fields["connection"].queryset = connection_list(owner=owner).filter(status="active").filter(
            Q(provider="imap") | Q(oauth_secret__isnull=False))

    def _addresses(self, name):
        values = [v.strip() for v in (self.cleaned_data.get(name) or "").split(",") if v.strip()]
        validator = forms.EmailField()
        for value in values:
            validator.clean(value)
        if len(values) > 100:
            raise forms.ValidationError("At most 100 recipients.")
        return values

    def clean_to(self):
        values = self._addresses("to")
        if not values:
            raise forms.ValidationError("Enter at least one recipient.")
        return values

    def clean_cc(self):
        return self._addresses("cc")

    def clean_subject(self):
        subject = self.cleaned_data.get("subject") or ""
        if "\r" in subject or "\n" in subject:
            raise forms.ValidationError("The subject must be one line.")
        return subject

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("form_key") is None:
            # Not a form this page rendered (no key, or a mangled one): show it again with a fresh key.
            self.errors.pop("form_key", None)
            self.data = self.data.copy()
            self.data["form_key"] = str(uuid.uuid4())
            raise forms.ValidationError("Please check the message and press Send again.")
        return cleaned

    def clean_in_reply_to(self):
        value = self.cleaned_data.get("in_reply_to") or ""
        if "\r" in value or "\n" in value:
            raise forms.ValidationError("Invalid reference.")
        return value


@login_required
def compose(request):
    initial = {}
    reply_to = request.GET.get("reply")
    if reply_to:
        original = message_get(owner=request.user, message_id=reply_to)
        subject = original.subject if original.subject.lower().startswith("re:") else f"Re: {original.subject}"
        # The bare address: From is often "Name <addr>", which the To field (addresses only) refuses.
        reply_to_address = parseaddr(original.from_addr)[1] or original.from_addr
        initial = {"to": reply_to_address, "subject": subject, "in_reply_to": original.message_id,
                   "connection": original.connection_id}
    draft = draft_for_compose(request, request.GET["draft"]) if request.GET.get("draft") and reply_to else None
    if draft and draft["text"]:
        initial["body_text"] = draft["text"]  # only pre-fills the form: nothing is sent until Send
    form = ComposeForm(request.POST or None, owner=request.user, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        _, created = services.outbox_submit_form(
            owner=request.user, form_key=data["form_key"], connection=data["connection"], to=data["to"],
            cc=data["cc"], subject=data["subject"], body_text=data["body_text"], in_reply_to=data["in_reply_to"])
        if created:
            flash.success(request, "Queued for sending.")
        else:
            flash.info(request, "This message was already queued from this form; it is sent only once.")
        return redirect("mailbox:outbox")
    return render(request, "mail/compose.html", {"form": form, "draft": draft}, status=400 if form.errors else 200)


@login_required
def outbox(request):
    rows = list(outbox_list(owner=request.user)[:100])
    return render(request, "mail/outbox.html", _outbox_context(rows))


@login_required
def outbox_item(request, outbox_id):
    row = outbox_get(owner=request.user, outbox_id=outbox_id)
    return render(request, "mail/outbox.html", _outbox_context([row]))


def _outbox_context(rows) -> dict:
    return {"rows": rows, "any_uncertain": any(r.status == OutboxMessage.Status.UNCERTAIN for r in rows),
            "stale_minutes": max(1, round(settings.AIEMAILY_SEND_STALE_SECONDS / 60))}
