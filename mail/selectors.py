"""Reads of the mail app, always scoped to one owner."""

from django.conf import settings
from django.db.models import Count, F, Max, Q
from rest_framework.exceptions import PermissionDenied

from aiemaily.lookups import JSONArrayHas
from aiemaily.ownership.models import owned_or_404
from aiemaily.webhooks.models import Provider
from mail import search_index
from mail.models import Connection, Delegation, Folder, Message, OutboxMessage


def connection_list(*, owner, include_disconnected: bool = False):
    qs = Connection.objects.for_owner(owner).order_by("created_at", "id")
    return qs if include_disconnected else qs.exclude(status=Connection.Status.DISCONNECTED)


def connection_get(*, owner, connection_id) -> Connection:
    """Another owner's connection is indistinguishable from a missing one: 404."""
    return owned_or_404(Connection.objects.for_owner(owner), connection_id)


def message_list(*, owner, filters: dict):
    """Every filter here works on PostgreSQL and on SQLite (tests/test_api_sqlite.py)."""
    qs = Message.objects.for_owner(owner).select_related("folder")
    if filters.get("connection"):
        qs = qs.filter(connection_id=filters["connection"])
    if filters.get("folder"):
        qs = qs.filter(folder__name=filters["folder"])
    if filters.get("label"):
        qs = qs.filter(JSONArrayHas(F("labels"), filters["label"]))
    if filters.get("unread") is not None:
        qs = qs.filter(unread=filters["unread"])
    if filters.get("category"):
        qs = qs.filter(ai_results__kind="triage", ai_results__category=filters["category"])
    if filters.get("priority"):
        qs = qs.filter(ai_results__kind="triage", ai_results__priority=filters["priority"])
    if filters.get("q"):
        # Through the keyed blind index only: subject and sender are ciphertext (mail/search_index.py).
        qs = search_index.search_filter(qs, owner, filters["q"])
    return qs


def message_get(*, owner, message_id):
    return owned_or_404(Message.objects.for_owner(owner).select_related("folder"), message_id)


def folder_list(*, owner):
    """The sidebar: every folder of the owner's mailboxes that are not disconnected, inbox first."""
    role_order = {"inbox": 0, "drafts": 1, "sent": 2, "archive": 3, "junk": 4, "trash": 5}
    folders = list(Folder.objects.for_owner(owner).select_related("connection")
                   .exclude(connection__status=Connection.Status.DISCONNECTED).order_by("name"))
    return sorted(folders, key=lambda f: (str(f.connection_id), role_order.get(f.role, 9), f.name.lower()))


def message_page(*, owner, filters: dict, before: tuple | None, size: int):
    """One page of the list, newest first, after the keyset cursor `before` = (date or None, id).

    Keyset paging reads `size + 1` rows from the (owner, -date) index however deep the page is, so
    the list stays fast at 100,000 messages where OFFSET would scan every skipped row. Messages
    without a date sort last.
    """
    qs = message_list(owner=owner, filters=filters)
    if before is not None:
        date, pk = before
        if date is None:
            qs = qs.filter(date__isnull=True, id__lt=pk)
        else:
            qs = qs.filter(Q(date__lt=date) | Q(date=date, id__lt=pk) | Q(date__isnull=True))
    rows = list(qs.order_by(F("date").desc(nulls_last=True), "-id")[: size + 1])
    # A search's page is re-checked against the decrypted subject and sender (search_index.recheck):
    # a 64-bit hash collision never shows up, at the price of a page one row short when it happens.
    return search_index.recheck(rows[:size], filters.get("q")), len(rows) > size


def thread_sizes(*, owner, thread_ids) -> dict[str, int]:
    """How many stored messages each thread has (thread grouping in the list), one query."""
    ids = [t for t in set(thread_ids) if t]
    if not ids:
        return {}
    rows = (Message.objects.for_owner(owner).filter(thread_id__in=ids).values("thread_id")
            .annotate(n=Count("id")).values_list("thread_id", "n"))
    return dict(rows)


def connection_sync_times(*, owner) -> dict:
    """{connection id: when its most recently synced folder finished}, one query."""
    rows = Folder.objects.for_owner(owner).values("connection_id").annotate(last=Max("synced_at"))
    return dict(rows.values_list("connection_id", "last"))


def outbox_list(*, owner):
    """The owner's outbox, newest first."""
    return OutboxMessage.objects.for_owner(owner).order_by("-created_at", "-id")


def outbox_get(*, owner, outbox_id) -> OutboxMessage:
    return owned_or_404(OutboxMessage.objects.for_owner(owner), outbox_id)


# --- delegated threads: what an owner shared, and what a delegate may read -------------------------

def delegations_given(*, owner):
    return Delegation.objects.for_owner(owner).select_related("delegate").order_by("-created_at", "-id")


def delegation_get(*, owner, delegation_id) -> Delegation:
    return owned_or_404(delegations_given(owner=owner), delegation_id)


def delegated_messages(*, delegate):
    return Message.objects.delegated_to(delegate).order_by("-date", "-id")


def delegated_message_get(*, delegate, message_id) -> Message:
    return owned_or_404(delegated_messages(delegate=delegate), message_id)


def delegated_draft_message_get(*, delegate, message_id) -> Message:
    """A message of a thread shared with `delegate` with the `draft` permission; 404 when it is not
    shared at all, 403 when it is shared to read only."""
    message = delegated_message_get(delegate=delegate, message_id=message_id)
    # Delegation RLS shows the delegate its own grants (policy delegate_sees_own_grants).
    can_draft = Delegation._base_manager.filter(
        delegate=delegate, owner_id=message.owner_id, connection_id=message.connection_id,
        thread_id=message.thread_id, revoked_at__isnull=True, permission=Delegation.Permission.DRAFT).exists()
    if not can_draft:
        raise PermissionDenied("This thread is shared with you to read only.")
    return message


def push_provider(connection: Connection) -> str | None:
    """The registry provider of this mailbox's channel, or None when push is not configured for it."""
    if connection.provider == Connection.Provider.GMAIL and settings.AIEMAILY_GMAIL_PUSH_TOPIC:
        return Provider.GMAIL
    if connection.provider == Connection.Provider.MICROSOFT and settings.AIEMAILY_GRAPH_NOTIFICATION_URL:
        return Provider.GRAPH
    return None


def message_actionable(message) -> bool:
    """IMAP acts on a UID; Gmail and Microsoft on the provider's id, with a signed-in connection."""
    connection = message.connection
    if connection.status != "active":
        return False
    if connection.provider == "imap":
        return bool(message.uid)
    return bool(message.provider_id) and connection.oauth_secret_id is not None
