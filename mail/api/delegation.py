"""Delegation API: hand a thread to another user, list and revoke grants, read what was shared."""

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, permissions, serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from aiemaily.api.pagination import CreatedCursorPagination
from mail import blobstore
from mail.delegation import (
    delegated_message_get,
    delegated_messages,
    delegation_get,
    delegation_grant,
    delegation_revoke,
    delegations_given,
)
from mail.models import Delegation
from mail.parsing import body_parts
from mail.selectors import message_get


class DelegationOutput(serializers.Serializer):
    id = serializers.UUIDField()
    thread_id = serializers.CharField()
    delegate = serializers.EmailField(source="delegate.email")
    permission = serializers.CharField()
    created_at = serializers.DateTimeField()
    revoked_at = serializers.DateTimeField()


class MessageDelegateApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    class DelegateInput(serializers.Serializer):
        email = serializers.EmailField(max_length=254)
        permission = serializers.ChoiceField(choices=Delegation.Permission.choices, default="read")

    @extend_schema(request=DelegateInput, responses={201: DelegationOutput})
    def post(self, request, message_id):
        message = message_get(owner=request.user, message_id=message_id)
        data = self.DelegateInput(data=request.data)
        data.is_valid(raise_exception=True)
        grant = delegation_grant(owner=request.user, message=message, **data.validated_data)
        return Response(DelegationOutput(grant).data, status=status.HTTP_201_CREATED)


class DelegationListApi(ListAPIView):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = DelegationOutput
    pagination_class = CreatedCursorPagination

    def get_queryset(self):
        return delegations_given(owner=self.request.user)


class DelegationDetailApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses={204: None})
    def delete(self, request, delegation_id):
        delegation_revoke(owner=request.user, delegation=delegation_get(owner=request.user,
                                                                        delegation_id=delegation_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class SharedMessageOutput(serializers.Serializer):
    id = serializers.UUIDField()
    thread_id = serializers.CharField()
    subject = serializers.CharField()
    sender = serializers.CharField(source="from_addr")
    to = serializers.ListField(source="to_addrs", child=serializers.CharField())
    date = serializers.DateTimeField()
    snippet = serializers.CharField()

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["from"] = data.pop("sender")
        return data


class SharedMessagePagination(CreatedCursorPagination):
    ordering = ("-date", "-id")


class SharedMessageListApi(ListAPIView):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = SharedMessageOutput
    pagination_class = SharedMessagePagination

    def get_queryset(self):
        return delegated_messages(delegate=self.request.user)


class SharedMessageDetailApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses=SharedMessageOutput)
    def get(self, request, message_id):
        message = delegated_message_get(delegate=request.user, message_id=message_id)
        data = SharedMessageOutput(message).data
        try:
            data.update(body_parts(blobstore.get(message.owner_id, message.blob_key, as_delegate=True)))
        except blobstore.BlobError:
            raise exceptions.APIException("The stored copy of this message could not be opened.") from None
        return Response(data)
