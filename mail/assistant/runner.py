"""Running one AI request in worker-ai: read the thread, pick the engine, redact, call, store.

Holds, for the length of one request and in memory only: the decrypted thread (storage-key
unwrap), the BYOK key opened from its lease (or the platform key from settings). The result is
encrypted under a per-object key before it is written. The audit trail gets provider, model,
message ids and byte counts — never content.
"""

import json
import logging
import re
import time

from django.conf import settings
from django.utils import timezone

from aiemaily.ownership.binding import owner_scope
from mail import blobstore
from mail.assistant import offline, prompts
from mail.assistant.limits import platform_ai_allowed
from mail.assistant.models import AiResult, AiSettings, field_name
from mail.assistant.providers import DEFAULT_MODEL, ProviderError, Target, provider_for
from mail.assistant.redaction import Policy, redact
from mail.assistant.selectors import thread_messages
from mail.assistant.thread import MailText, read
from mail.models import Connection, Message
from secrets_vault.crypto import SecretStr
from secrets_vault.models import AiKey, AuditEvent
from secrets_vault.sealing import LeaseError, lease_open
from secrets_vault.services import audit_record

logger = logging.getLogger(__name__)
THREAD_LIMIT = 50


def _thread(owner_id, message: Message, kind: str) -> list[MailText]:
    rows = [message] if kind == "triage" else thread_messages(owner_id=owner_id, message=message)[-THREAD_LIMIT:]
    out = []
    for row in rows:
        try:
            # A delegate's draft reads the shared thread with the owner's storage key, through the grant.
            delegate = owner_id if str(row.owner_id) != str(owner_id) else None
            raw = blobstore.get(row.owner_id, row.blob_key, delegate=delegate)
        except blobstore.BlobError:
            continue
        out.append(read(raw, sender=row.from_addr, to=row.to_addrs, date=row.date, subject=row.subject))
    return out


def _offline(kind: str, thread: list[MailText], *, tone: str, instruction: str, me: str) -> tuple[str, str, str]:
    if kind == "summary":
        return offline.summarise(thread), "", ""
    if kind == "draft":
        return offline.reply_scaffold(thread, tone=tone, instruction=instruction), "", ""
    category, priority, reason = offline.triage(thread[-1] if thread else MailText("", [], "", "", ""), me=me)
    return reason, category, priority


def _parse_triage(text: str) -> tuple[str, str] | None:
    match = re.search(r"\{[^{}]{0,300}\}", text)
    try:
        data = json.loads(match.group(0)) if match else None
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("category") not in AiResult.Category.values \
            or data.get("priority") not in AiResult.Priority.values:
        return None
    return data["category"], data["priority"]


def _engine(owner_id, prefs: AiSettings | None, result: AiResult, lease: dict | None):
    """(source, Target or None). None means the offline default. Raises ProviderError for a
    configuration the user must fix (a BYOK lease that does not open)."""
    # Web records a request as offline from the start when it must not leave (a delegate's draft of
    # another owner's thread): worker-ai honours that whatever the reader's own settings say.
    if prefs is None or prefs.mode == AiSettings.Mode.OFFLINE or not prefs.third_party_enabled \
            or result.source == AiResult.Source.OFFLINE:
        return AiResult.Source.OFFLINE, None
    if prefs.mode == AiSettings.Mode.PLATFORM:
        key = settings.AIEMAILY_AI_PLATFORM_KEY
        if not key or not platform_ai_allowed(owner_id=owner_id, kind=result.kind).allowed:
            return AiResult.Source.OFFLINE, None
        provider = settings.AIEMAILY_AI_PLATFORM_PROVIDER
        return AiResult.Source.PLATFORM, Target(provider=provider, model=settings.AIEMAILY_AI_PLATFORM_MODEL,
                                                base_url=settings.AIEMAILY_AI_PLATFORM_BASE_URL, key=SecretStr(key))
    with owner_scope(owner_id):
        ai_key = AiKey.objects.for_owner(owner_id).filter(pk=prefs.ai_key_id).first() if prefs.ai_key_id else None
    if ai_key is None or lease is None:
        raise ProviderError("no_key", "Your AI key is missing: add one in AI settings or switch to offline.")
    try:
        key = lease_open(lease, owner_id=owner_id, connection_id=ai_key.pk, purpose="ai_key", recipient="ai")
    except LeaseError:
        raise ProviderError("lease", "Your AI key could not be handed to the AI worker; try again.",
                            retryable=False) from None
    return AiResult.Source.BYOK, Target(provider=ai_key.provider, model=prefs.model or DEFAULT_MODEL[ai_key.provider],
                                        base_url=ai_key.base_url, key=key)


def _call(target: Target, system: str, user: str, kind: str):
    attempts = max(1, settings.AIEMAILY_AI_MAX_RETRIES + 1)
    for attempt in range(attempts):
        adapter = provider_for(target)
        try:
            return adapter.complete(system, user, max_tokens=200 if kind == "triage" else 800)
        except ProviderError as exc:
            wait = exc.retry_after if exc.retry_after is not None else 2 ** attempt
            if not exc.retryable or attempt == attempts - 1 or wait > 30:
                exc.bytes_sent = adapter.bytes_sent
                raise
            time.sleep(wait)
    raise AssertionError("unreachable")


def result_run(*, owner_id, result_id, lease: dict | None = None) -> dict:
    """Produce one result. Network I/O happens outside any database transaction."""
    with owner_scope(owner_id):
        # Not joined to the connection: a delegate's draft hangs off another owner's message, whose
        # mailbox the delegate cannot see (only the shared thread's messages).
        result = AiResult.objects.for_owner(owner_id).select_related("message").filter(pk=result_id).first()
        if result is None or result.status != AiResult.Status.PENDING:
            return {"result_id": str(result_id), "status": "gone" if result is None else result.status}
        prefs = AiSettings.objects.for_owner(owner_id).first()
        instruction = ""
        if result.instruction_ct:
            instruction = blobstore.open_field(owner_id, field_name(result.pk, "instruction"),
                                               bytes(result.instruction_ct)).decode()
        thread = _thread(owner_id, result.message, result.kind)
        delegated = str(result.message.owner_id) != str(owner_id)
        me = "" if delegated else Connection.objects.for_owner(owner_id).get(pk=result.message.connection_id).email
    category = priority = ""
    redactions = sent = received = 0
    try:
        source, target = (AiResult.Source.OFFLINE, None) if delegated else _engine(owner_id, prefs, result, lease)
        if target is None:
            text, category, priority = _offline(result.kind, thread, tone=result.tone or "neutral",
                                                instruction=instruction, me=me)
            provider, model = "offline", "textrank-rules-v1"
        else:
            policy = Policy.from_settings(prefs)
            thread, omitted = prompts.fit(thread)
            for item in thread:
                item.text, count = redact(item.text, policy)
                item.subject, count_subject = redact(item.subject, policy)
                redactions += count + count_subject
            system, user = prompts.build(result.kind, thread, tone=result.tone or "neutral", instruction=instruction,
                                         omitted=omitted)
            provider, model = target.provider, target.model
            with owner_scope(owner_id):
                ids = ",".join(str(m) for m in _ids(owner_id, result))
                audit_record(owner_id=owner_id, action=AuditEvent.Action.AI, process="ai", purpose=result.kind,
                             subject=result.message_id,
                             detail=f"{source}: {provider} {model}; {len(user.encode())} bytes of "
                                    f"{len(thread)} messages, {redactions} redacted; ids {ids}")
            completion = _call(target, system, user, result.kind)
            text, sent, received = completion.text.strip(), completion.bytes_sent, completion.bytes_received
            if result.kind == "triage":
                parsed = _parse_triage(text)
                if parsed is None:  # a model that did not answer the question: the rules decide
                    category, priority, text = offline.triage(thread[-1], me=me)
                    text = f"rules (model answer unusable): {text}"
                else:
                    category, priority = parsed
                    text = "model"
    except ProviderError as exc:
        with owner_scope(owner_id):
            AiResult.objects.for_owner(owner_id).filter(pk=result_id).update(
                status=AiResult.Status.ERROR, error_code=exc.code, error_message=exc.message[:300],
                retry_after=exc.retry_after, redactions=redactions, bytes_sent=getattr(exc, "bytes_sent", 0),
                completed_at=timezone.now())
        logger.info("ai %s %s failed: %s", result.kind, result_id, exc.code)
        return {"result_id": str(result_id), "status": "error", "code": exc.code}
    with owner_scope(owner_id):
        text_ct = blobstore.seal_field(owner_id, field_name(result_id, "text"), text.encode())
        AiResult.objects.for_owner(owner_id).filter(pk=result_id, status=AiResult.Status.PENDING).update(
            status=AiResult.Status.READY, source=source, provider=provider, model=model[:100],
            ai_key_id=(prefs.ai_key_id if source == AiResult.Source.BYOK else None), text_ct=text_ct,
            category=category, priority=priority, redactions=redactions, bytes_sent=sent, bytes_received=received,
            completed_at=timezone.now())
    return {"result_id": str(result_id), "status": "ready"}


def _ids(owner_id, result: AiResult) -> list:
    if result.kind == "triage":
        return [result.message_id]
    ids = [m.pk for m in thread_messages(owner_id=owner_id, message=result.message)[-THREAD_LIMIT:]]
    return ids[:4] + ([f"+{len(ids) - 4} more"] if len(ids) > 4 else [])
