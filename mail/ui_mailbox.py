"""Mailbox pages: the message list, one message (sandboxed) with its actions, compose, outbox."""

import html

from django import forms
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from rest_framework.exceptions import ValidationError

from aiemaily.ownership.models import owned_or_404
from aiemaily.security.mailframe import render_message_frame
from mail import blobstore, services
from mail.actions import LABEL
from mail.delegation import delegation_grant
from mail.models import Connection, Delegation, OutboxMessage
from mail.outbox import outbox_create
from mail.parsing import body_parts
from mail.selectors import connection_list, message_get, message_list

PAGE = 50


@login_required
def mailbox(request):
    query = (request.GET.get("q") or "")[:200]
    items = list(message_list(owner=request.user, filters={"q": query}).select_related("folder")
                 .order_by("-date", "-id")[:PAGE])
    return render(request, "mail/mailbox.html", {"items": items, "q": query})


def _frame(request, raw: bytes, subject: str):
    parts = body_parts(raw)
    body = parts["body_html"] or f"<pre>{html.escape(parts['body_text'])}</pre>"
    return render_message_frame(request, body, load_images=request.GET.get("images") == "1",
                                title=f"Message: {subject}")


@login_required
def message_view(request, message_id):
    message = message_get(owner=request.user, message_id=message_id)
    try:
        frame = _frame(request, blobstore.get(request.user.pk, message.blob_key), message.subject)
    except blobstore.BlobError:
        frame = None
    context = {"message": message, "frame": frame, "images_loaded": request.GET.get("images") == "1",
               "permissions": Delegation.Permission.choices}
    return render(request, "mail/message_view.html", context)


def _actionable(message) -> bool:
    """IMAP acts on a UID; Gmail and Microsoft on the provider's id, with a signed-in connection."""
    connection = message.connection
    if connection.status != "active":
        return False
    if connection.provider == "imap":
        return bool(message.uid)
    return bool(message.provider_id) and connection.oauth_secret_id is not None


@login_required
@require_POST
def message_act(request, message_id, action):
    message = message_get(owner=request.user, message_id=message_id)
    if not _actionable(message):
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
        delegation_grant(owner=request.user, message=message, email=(request.POST.get("email") or "")[:254],
                         permission=permission)
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

    def __init__(self, *args, owner=None, **kwargs):
        super().__init__(*args, **kwargs)
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
        initial = {"to": original.from_addr, "subject": subject, "in_reply_to": original.message_id,
                   "connection": original.connection_id}
    form = ComposeForm(request.POST or None, owner=request.user, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        outbox_create(owner=request.user, connection=data["connection"], to=data["to"], cc=data["cc"],
                      subject=data["subject"], body_text=data["body_text"], in_reply_to=data["in_reply_to"])
        flash.success(request, "Queued for sending.")
        return redirect("mailbox:outbox")
    return render(request, "mail/compose.html", {"form": form}, status=400 if form.errors else 200)


@login_required
def outbox(request):
    rows = list(OutboxMessage.objects.for_owner(request.user).order_by("-created_at", "-id")[:100])
    return render(request, "mail/outbox.html", {"rows": rows})


@login_required
def outbox_item(request, outbox_id):
    row = owned_or_404(OutboxMessage.objects.for_owner(request.user), outbox_id)
    return render(request, "mail/outbox.html", {"rows": [row]})
