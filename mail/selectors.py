"""Reads of the mail app, always scoped to one owner."""


from aiemaily.ownership.models import owned_or_404
from mail.models import Connection


def connection_list(*, owner, include_disconnected: bool = False):
    qs = Connection.objects.for_owner(owner).order_by("created_at", "id")
    return qs if include_disconnected else qs.exclude(status=Connection.Status.DISCONNECTED)


def connection_get(*, owner, connection_id) -> Connection:
    """Another owner's connection is indistinguishable from a missing one: 404."""
    return owned_or_404(Connection.objects.for_owner(owner), connection_id)


def message_list(*, owner, filters: dict):
    from django.db.models import Q

    from mail.models import Message

    qs = Message.objects.for_owner(owner).select_related("folder")
    if filters.get("connection"):
        qs = qs.filter(connection_id=filters["connection"])
    if filters.get("folder"):
        qs = qs.filter(folder__name=filters["folder"])
    if filters.get("label"):
        qs = qs.filter(labels__contains=[filters["label"]])
    if filters.get("unread") is not None:
        qs = qs.filter(unread=filters["unread"])
    if filters.get("q"):
        qs = qs.filter(Q(subject__icontains=filters["q"]) | Q(from_addr__icontains=filters["q"]))
    return qs


def message_get(*, owner, message_id):
    from mail.models import Message

    return owned_or_404(Message.objects.for_owner(owner).select_related("folder"), message_id)
