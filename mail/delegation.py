"""Delegating a thread: grant, revoke, and what the delegate may read (services and selectors)."""

from django.utils import timezone
from rest_framework import serializers

from accounts.models import User
from aiemaily.ownership.models import owned_or_404
from mail.models import Delegation, Message


def delegation_grant(*, owner, message: Message, email: str, permission: str) -> Delegation:
    delegate = User.objects.filter(email__iexact=email, is_active=True).first()
    if delegate is None or delegate.pk == owner.pk:
        # One message for both cases, so the form does not confirm who has an account beyond
        # what the owner typed.
        raise serializers.ValidationError({"email": "Enter the exact address of another Aiemaily user."})
    thread_id = message.thread_id or message.message_id or str(message.pk)
    if not message.thread_id:
        Message.objects.for_owner(owner).filter(pk=message.pk).update(thread_id=thread_id)
    existing = Delegation.objects.for_owner(owner).filter(
        delegate=delegate, connection_id=message.connection_id, thread_id=thread_id, revoked_at__isnull=True).first()
    if existing:
        if existing.permission != permission:
            existing.permission = permission
            existing.save(update_fields=["permission"])
        return existing
    return Delegation.objects.create(owner=owner, delegate=delegate, connection_id=message.connection_id,
                                     thread_id=thread_id, permission=permission)


def delegation_revoke(*, owner, delegation: Delegation) -> None:
    Delegation.objects.for_owner(owner).filter(pk=delegation.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now())


def delegations_given(*, owner):
    return Delegation.objects.for_owner(owner).select_related("delegate").order_by("-created_at", "-id")


def delegation_get(*, owner, delegation_id) -> Delegation:
    return owned_or_404(delegations_given(owner=owner), delegation_id)


def delegated_messages(*, delegate):
    return Message.objects.delegated_to(delegate).order_by("-date", "-id")


def delegated_message_get(*, delegate, message_id) -> Message:
    return owned_or_404(delegated_messages(delegate=delegate), message_id)
