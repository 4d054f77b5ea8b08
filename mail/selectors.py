"""Reads of the mail app, always scoped to one owner."""

from django.shortcuts import get_object_or_404

from mail.models import Connection


def connection_list(*, owner, include_disconnected: bool = False):
    qs = Connection.objects.for_owner(owner).order_by("created_at", "id")
    return qs if include_disconnected else qs.exclude(status=Connection.Status.DISCONNECTED)


def connection_get(*, owner, connection_id) -> Connection:
    """Another owner's connection is indistinguishable from a missing one: 404."""
    return get_object_or_404(Connection.objects.for_owner(owner), pk=connection_id)
