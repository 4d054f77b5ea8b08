"""The dashboard's reads: one owner's mailboxes, triage, summaries and security events, from each app's
selectors (this module only composes them; it writes nothing)."""

from mail.assistant.selectors import ai_settings_get, recent_summaries
from mail.selectors import connection_list, connection_sync_times, message_list
from secrets_vault.selectors import audit_list

NEEDS_REPLY_SHOWN = 5


def dashboard_context(user) -> dict:
    connections = list(connection_list(owner=user))
    synced = connection_sync_times(owner=user)
    for connection in connections:
        connection.last_synced = synced.get(connection.pk)
    needs_reply = message_list(owner=user, filters={"category": "needs_reply"}).order_by("-date", "-id")
    ai = ai_settings_get(owner=user)
    next_steps = []
    if not connections:
        next_steps.append("connect")
    if ai.mode == "offline":
        next_steps.append("ai_key")
    return {
        "connections": connections,
        "needs_reply": list(needs_reply[:NEEDS_REPLY_SHOWN]),
        "needs_reply_more": needs_reply[NEEDS_REPLY_SHOWN:NEEDS_REPLY_SHOWN + 1].exists(),
        "summaries": recent_summaries(owner=user),
        "security_events": list(audit_list(owner=user)[:5]),
        "next_steps": next_steps,
        "ai_settings": ai,
    }
