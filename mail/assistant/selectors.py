"""Reads of the assistant (web and worker-ai), always scoped to one owner."""

import hashlib

from django.db.models import OuterRef, Subquery

from aiemaily.ownership.models import owned_or_404
from mail.assistant.models import AiResult, AiSettings
from mail.models import Message


def thread_messages(*, owner_id, message: Message) -> list[Message]:
    """The messages of `message`'s thread (same mailbox) that `owner_id` may read, oldest first; just
    it without a thread id. For a delegate (`owner_id` is not the message's owner): the shared thread,
    through the live grant only."""
    if not message.thread_id:
        return [message]
    if str(message.owner_id) == str(owner_id):
        rows = Message.objects.for_owner(owner_id)
    else:
        rows = Message.objects.delegated_to(owner_id).filter(owner_id=message.owner_id)
    return list(rows.filter(connection_id=message.connection_id, thread_id=message.thread_id).order_by("date", "id"))


def thread_key(messages: list[Message]) -> str:
    """Changes when a message joins or leaves the thread: a cached summary covers one such state."""
    return hashlib.sha256(",".join(sorted(str(m.pk) for m in messages)).encode()).hexdigest()


def ai_settings_get(*, owner) -> AiSettings:
    """The owner's settings, or unsaved defaults (offline, everything redacted)."""
    return AiSettings.objects.for_owner(owner).first() or AiSettings(owner=owner)


def ai_result_get(*, owner, result_id, kind: str | None = None) -> AiResult:
    query = AiResult.objects.for_owner(owner).select_related("message")
    if kind:
        query = query.filter(kind=kind)
    return owned_or_404(query, result_id)


def latest_summary(*, owner, key: str) -> AiResult | None:
    """The newest summary of this thread state, asked for from any of its messages."""
    return AiResult.objects.for_owner(owner).filter(kind=AiResult.Kind.SUMMARY, thread_key=key).order_by(
        "-created_at", "-id").first()


def with_triage(messages, *, owner):
    """Annotate a message queryset with its triage (triage_category, triage_priority), one query."""
    triage = AiResult.objects.for_owner(owner).filter(message_id=OuterRef("pk"), kind=AiResult.Kind.TRIAGE,
                                                      status=AiResult.Status.READY)
    return messages.annotate(triage_category=Subquery(triage.values("category")[:1]),
                             triage_priority=Subquery(triage.values("priority")[:1]))


def triage_by_message(*, owner, message_ids) -> dict:
    """Each listed message's ready triage as (category, priority), one query (the mailbox list)."""
    rows = (AiResult.objects.for_owner(owner).filter(message_id__in=list(message_ids), kind=AiResult.Kind.TRIAGE,
                                                     status=AiResult.Status.READY)
            .values_list("message_id", "category", "priority"))
    return {message_id: (category, priority) for message_id, category, priority in rows}


def recent_summaries(*, owner, limit: int = 5) -> list[AiResult]:
    """The newest ready summaries with their message (the dashboard), one query."""
    return list(AiResult.objects.for_owner(owner).filter(kind=AiResult.Kind.SUMMARY, status=AiResult.Status.READY)
                .select_related("message").order_by("-created_at", "-id")[:limit])
