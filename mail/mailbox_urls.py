"""Mailbox pages (server-rendered UI)."""

from django.urls import path

from mail import ui_mailbox

app_name = "mailbox"

urlpatterns = [
    path("", ui_mailbox.mailbox, name="index"),
    path("compose/", ui_mailbox.compose, name="compose"),
    path("outbox/", ui_mailbox.outbox, name="outbox"),
    path("outbox/<uuid:outbox_id>/", ui_mailbox.outbox_item, name="outbox_item"),
    path("<uuid:message_id>/", ui_mailbox.message_view, name="message"),
    path("<uuid:message_id>/delegate/", ui_mailbox.message_delegate, name="delegate"),
    path("<uuid:message_id>/<str:action>/", ui_mailbox.message_act, name="act"),
]
