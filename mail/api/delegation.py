"""Delegation API: hand a thread to another user, list and revoke grants, read what was shared."""

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, permissions, serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from aiemaily.api.fields import renamed_field
from aiemaily.api.pagination import CreatedCursorPagination
from mail import blobstore
from mail.models import Delegation
from mail.parsing import body_parts, thread_source
from mail.selectors import (
    delegated_message_get,
    delegated_messages,
    delegation_get,
    delegations_given,
    message_get,
)
from mail.services import delegation_grant, delegation_revoke, message_body_open


class DelegationOutput(serializers.Serializer):
    id = serializers.UUIDField()
    thread_id = serializers.CharField()
    thread_source = serializers.SerializerMethodField(
        help_text="provider: the provider's own thread id (Gmail threadId, Graph conversationId), which a "
                  "sender cannot choose; headers: the messages' References/Message-ID, which any sender can write")
    delegate = serializers.EmailField(source="delegate.email")
    permission = serializers.CharField()
    created_at = serializers.DateTimeField()
    revoked_at = serializers.DateTimeField(allow_null=True)


    def get_thread_source(self, obj) -> str:
        return thread_source(obj.thread_id)


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


@renamed_field("sender", "from")
class SharedMessageOutput(serializers.Serializer):
    id = serializers.UUIDField()
    thread_id = serializers.CharField()
    subject = serializers.CharField()
    sender = serializers.CharField(source="from_addr")
    to = serializers.ListField(source="to_addrs", child=serializers.CharField())
    date = serializers.DateTimeField(allow_null=True)
    snippet = serializers.CharField()


class SharedMessageDetailOutput(SharedMessageOutput):
    body_text = serializers.CharField()
    body_html = serializers.CharField(help_text="sanitised HTML, safe to display")
    headers = serializers.DictField(child=serializers.CharField())


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

    @extend_schema(responses=SharedMessageDetailOutput)
    def get(self, request, message_id):
        message = delegated_message_get(delegate=request.user, message_id=message_id)
        data = SharedMessageOutput(message).data
        try:
            raw = message_body_open(reader=request.user, message=message, view="API shared message detail")
            parts = body_parts(raw)
            malformed = parts.pop("malformed")
            data.update(parts, parse_error=message.parse_error or malformed)
        except blobstore.BlobError:
            raise exceptions.APIException("The stored copy of this message could not be opened.") from None
        return Response(data)
