"""Reads of the vault app, always scoped to one owner."""


from aiemaily.ownership.models import owned_or_404
from secrets_vault.models import AiKey, AuditEvent


def audit_list(*, owner):
    return AuditEvent.objects.for_owner(owner).order_by("-created_at", "-id")


def audit_get(*, owner, event_id) -> AuditEvent:
    """Another owner's event is indistinguishable from a missing one: 404."""
    return owned_or_404(AuditEvent.objects.for_owner(owner), event_id)


def ai_key_list(*, owner):
    return AiKey.objects.for_owner(owner).select_related("secret").order_by("-created_at", "-id")
