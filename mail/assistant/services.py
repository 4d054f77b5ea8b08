"""Writes of the assistant, web side: ask for a summary, a draft or triage; change AI settings.

Web never builds a prompt and never holds an AI key: it records a pending result and queues it for
worker-ai (through the vault for a BYOK lease). Drafts are only text for the reply form: sending
stays the user's own press of Send, through the exactly-once outbox.
"""

from datetime import timedelta

from celery import chain
from django.db import transaction
from django.utils import timezone

from billing.services import platform_ai_check
from mail import blobstore
from mail.assistant.models import AiResult, AiSettings, field_name
from mail.assistant.selectors import latest_summary, thread_key, thread_messages
from mail.models import Connection, Message
from mail.queue import result_run, result_run_leased
from secrets_vault.queue import ai_key_lease

PENDING_STALE = timedelta(minutes=5)
ERROR_HOLD_SECONDS = 10


def _dispatch(result: AiResult) -> None:
    prefs = AiSettings.objects.for_owner(result.owner_id).select_related("ai_key").first()
    owner_id, result_id = str(result.owner_id), str(result.pk)
    leased = prefs and prefs.mode == AiSettings.Mode.BYOK and prefs.third_party_enabled and prefs.ai_key is not None
    if leased and result.source != AiResult.Source.OFFLINE:
        key_id, secret_id = str(prefs.ai_key.pk), str(prefs.ai_key.secret_id)
        transaction.on_commit(lambda: chain(ai_key_lease.si(owner_id, key_id, secret_id),
                                            result_run_leased.s(owner_id, result_id)).delay())
    else:
        transaction.on_commit(lambda: result_run.delay(owner_id, result_id))


def _plan_check(owner) -> None:
    """A new request that would run on the platform's key needs a plan that includes it
    (PlanLimitReached: 403 `plan_limit` in the API, the reason and an upgrade link on the page).
    Offline and the user's own key work on every plan."""
    prefs = AiSettings.objects.for_owner(owner).first()
    if prefs is not None and _uses_platform(prefs):
        platform_ai_check(owner=owner)


def summary_request(*, owner, message: Message) -> AiResult:
    """The cached summary of this thread state, or a new pending one (queued)."""
    key = thread_key(thread_messages(owner_id=owner.pk, message=message))
    existing = latest_summary(owner=owner, key=key)
    now = timezone.now()
    if existing is not None:
        if existing.status == AiResult.Status.READY:
            return existing
        if existing.status == AiResult.Status.PENDING and now - existing.created_at < PENDING_STALE:
            return existing
        hold = max(existing.retry_after or 0, ERROR_HOLD_SECONDS)
        if existing.status == AiResult.Status.ERROR and (now - (existing.completed_at or now)).total_seconds() < hold:
            return existing
    _plan_check(owner)
    result = AiResult.objects.create(owner=owner, message=message, kind=AiResult.Kind.SUMMARY, thread_key=key)
    _dispatch(result)
    return result


DELEGATE_NOTICE = ("Drafted by the offline assistant: a thread shared with you is never sent to an AI provider "
                   "its owner did not choose.")


def draft_request(*, owner, message: Message, instruction: str = "", tone: str = "neutral") -> AiResult:
    """A reply draft. `message` may be another owner's, shared with `owner` with the draft permission
    (the caller checked the grant): the draft is then the delegate's own row, made offline — the
    owner's mail goes neither to the delegate's provider nor on the owner's key or plan."""
    result = AiResult(owner=owner, message=message, kind=AiResult.Kind.DRAFT, tone=tone)
    if str(message.owner_id) != str(owner.pk):
        result.source, result.error_message = AiResult.Source.OFFLINE, DELEGATE_NOTICE
    else:
        _plan_check(owner)
    if instruction:
        result.instruction_ct = blobstore.seal_field(owner.pk, field_name(result.pk, "instruction"),
                                                     instruction.encode())
    result.save()
    _dispatch(result)
    return result


TRIAGE_PER_BATCH = 50


def triage_new(*, owner_id, message_ids) -> int:
    """Sync's hook for an opted-in mailbox: triage the newest messages just stored (rows a conflict
    skipped are not there). Bounded per batch, so a first sync of years of mail is not 10,000
    model calls; older mail keeps no category."""
    stored = list(Message.objects.for_owner(owner_id).filter(pk__in=message_ids).order_by("-date", "-id")
                  .values_list("pk", flat=True)[:TRIAGE_PER_BATCH])
    return triage_queue(owner_id=owner_id, message_ids=stored)


def triage_queue(*, owner_id, message_ids) -> int:
    """A pending triage for each message (at most one each), queued for worker-ai."""
    created = 0
    for message_id in message_ids:
        result, made = AiResult.objects.for_owner(owner_id).get_or_create(
            owner_id=owner_id, message_id=message_id, kind=AiResult.Kind.TRIAGE)
        if made:
            _dispatch(result)
            created += 1
    return created


def result_text(*, result: AiResult) -> str:
    """The decrypted text of a ready result (web holds storage-key unwrap, like for bodies)."""
    if result.status != AiResult.Status.READY or not result.text_ct:
        return ""
    return blobstore.open_field(result.owner_id, field_name(result.pk, "text"), bytes(result.text_ct)).decode()


def _uses_platform(prefs: AiSettings) -> bool:
    return prefs.mode == AiSettings.Mode.PLATFORM and prefs.third_party_enabled


def ai_settings_update(*, owner, **fields) -> AiSettings:
    prefs = AiSettings.objects.for_owner(owner).first() or AiSettings(owner=owner)
    before = not prefs._state.adding and _uses_platform(prefs)
    for name, value in fields.items():
        setattr(prefs, name, value)
    if _uses_platform(prefs) and not before:
        # Switching to the platform's key needs a plan that includes it. Only the switch is
        # checked: someone whose plan lapsed can still change their other settings.
        platform_ai_check(owner=owner)
    prefs.updated_at = timezone.now()
    prefs.save()
    return prefs


def triage_mailboxes_set(*, owner, connection_ids) -> None:
    """Opt mailboxes in to triage on sync (and every other one out)."""
    mine = Connection.objects.for_owner(owner)
    mine.filter(pk__in=connection_ids).update(ai_triage=True)
    mine.exclude(pk__in=connection_ids).update(ai_triage=False)
