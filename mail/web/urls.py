"""The mail app's pages: one URL module for the web zone, mounted by aiemaily/urls.py.

Three namespaces, as before: `mail` (the OAuth callback) and `connections` (the connection pages)
under /connections/, `mailbox` (the mail client) under /mail/. The JSON API is mail/api/urls.py.
"""

from django.urls import path, re_path

from mail.web import assistant, connections, mailbox, oauth
from mail.web.autoconfig import autoconfig_lookup

oauth_urls = ([
    # Registered with Google and Microsoft as redirect URIs: the path must never change.
    re_path(r"^oauth/(?P<provider>gmail|microsoft)/callback$", oauth.oauth_callback, name="oauth-callback"),
], "mail")

connection_urls = ([
    path("", connections.connection_index, name="index"),
    path("add/imap/", connections.connection_add_imap, name="add_imap"),
    path("autoconfig", autoconfig_lookup, name="autoconfig"),
    path("add/<str:provider>/", connections.connection_start_oauth, name="start_oauth"),
    path("<uuid:connection_id>/", connections.connection_detail, name="detail"),
    path("<uuid:connection_id>/status.json", connections.connection_status, name="status"),
    path("<uuid:connection_id>/password/", connections.connection_update_password, name="password"),
    path("<uuid:connection_id>/sync/", connections.connection_sync_now, name="sync"),
    path("<uuid:connection_id>/disconnect/", connections.connection_disconnect, name="disconnect"),
], "connections")

mailbox_urls = ([
    path("", mailbox.mailbox, name="index"),
    path("updates.json", mailbox.mailbox_updates, name="updates"),
    path("compose/", mailbox.compose, name="compose"),
    path("outbox/", mailbox.outbox, name="outbox"),
    path("outbox/<uuid:outbox_id>/", mailbox.outbox_item, name="outbox_item"),
    path("assistant/", assistant.ai_settings, name="ai_settings"),
    path("assistant/keys/", assistant.ai_key_add_page, name="ai_key_add"),
    path("assistant/keys/<uuid:key_id>/delete/", assistant.ai_key_delete_page, name="ai_key_delete"),
    path("drafts/<uuid:draft_id>/status.json", assistant.draft_status, name="draft_status"),
    path("<uuid:message_id>/ai/summary.json", assistant.summary_status, name="summary_status"),
    path("<uuid:message_id>/ai/draft/", assistant.draft_start, name="draft"),
    path("<uuid:message_id>/", mailbox.message_view, name="message"),
    path("<uuid:message_id>/attachments/<int:n>/", mailbox.message_attachment, name="attachment"),
    path("<uuid:message_id>/delegate/", mailbox.message_delegate, name="delegate"),
    path("<uuid:message_id>/<str:action>/", mailbox.message_act, name="act"),
], "mailbox")
