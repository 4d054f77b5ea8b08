"""Writes of the vault app. Every function is keyword-only and named <entity>_<verb>."""

from secrets_vault.models import AuditEvent


def audit_record(*, owner_id, action: str, process: str, purpose: str = "", subject: str = "",
                 detail: str = "") -> AuditEvent:
    """Write one audit event. Runs inside a transaction bound to `owner_id` (RLS WITH CHECK)."""
    return AuditEvent.objects.create(
        owner_id=owner_id, action=action, process=process, purpose=purpose[:64], subject=str(subject)[:128],
        detail=detail[:255],
    )
