"""Messages API: the owner's synced mail (metadata list; one message with its decrypted body)."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, permissions, serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from aiemaily.api.pagination import CreatedCursorPagination
from mail import blobstore, services
from mail.parsing import body_parts
from mail.selectors import connection_get, message_get, message_list


class MessagePagination(CreatedCursorPagination):
    ordering = ("-date", "-id")


class MessageOutput(serializers.Serializer):
    id = serializers.UUIDField()
    connection = serializers.UUIDField(source="connection_id")
    folder = serializers.CharField(source="folder.name")
    message_id = serializers.CharField()
    subject = serializers.CharField()
    sender = serializers.CharField(source="from_addr")
    to = serializers.ListField(source="to_addrs", child=serializers.CharField())
    date = serializers.DateTimeField()
    unread = serializers.BooleanField()
    labels = serializers.ListField(child=serializers.CharField())
    snippet = serializers.CharField()

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["from"] = data.pop("sender")  # `from` is a Python keyword; the contract names it so
        return data


class MessageFilters(serializers.Serializer):
    connection = serializers.UUIDField(required=False)
    folder = serializers.CharField(required=False, max_length=500)
    label = serializers.CharField(required=False, max_length=200)
    unread = serializers.BooleanField(required=False, allow_null=True, default=None)
    q = serializers.CharField(required=False, max_length=200)


class MessageListApi(ListAPIView):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = MessageOutput
    pagination_class = MessagePagination

    @extend_schema(parameters=[MessageFilters])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        filters = MessageFilters(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return message_list(owner=self.request.user, filters=filters.validated_data)


class MessageDetailApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses=MessageOutput)
    def get(self, request, message_id):
        message = message_get(owner=request.user, message_id=message_id)
        data = MessageOutput(message).data
        try:
            raw = blobstore.get(request.user.pk, message.blob_key)
        except blobstore.BlobError:
            raise exceptions.APIException("The stored copy of this message could not be opened.") from None
        data.update(body_parts(raw))
        data["parse_error"] = message.parse_error
        return Response(data)


class ConnectionSyncApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=None, responses={202: None}, parameters=[OpenApiParameter("connection_id", str,
                                                                                     OpenApiParameter.PATH)])
    def post(self, request, connection_id):
        connection = connection_get(owner=request.user, connection_id=connection_id)
        if connection.status != "active" or (connection.provider != "imap" and connection.oauth_secret_id is None):
            raise exceptions.ValidationError({"connection": "Only an active connection can sync now."})
        services.connection_sync_dispatch(connection=connection)
        return Response({"id": str(connection.pk), "sync": "queued"}, status=status.HTTP_202_ACCEPTED)


class _ActionApi(APIView):
    permission_classes = [permissions.IsAuthenticated]
    action = ""

    def _queue(self, request, message_id, params):
        message = message_get(owner=request.user, message_id=message_id)
        from mail.ui_mailbox import _actionable

        if not _actionable(message):
            raise exceptions.ValidationError({"message": "This message's mailbox cannot be changed right now."})
        services.message_action_queue(message=message, action=self.action, params=params)
        return Response({"id": str(message.pk), "action": self.action, "status": "queued"},
                        status=status.HTTP_202_ACCEPTED)


class MessageArchiveApi(_ActionApi):
    action = "archive"

    @extend_schema(request=None, responses={202: None})
    def post(self, request, message_id):
        return self._queue(request, message_id, {})


def _label(value: str) -> str:
    from mail.actions import LABEL

    if not LABEL.match(value):
        raise serializers.ValidationError("Labels are 1-64 letters, digits, '.', '_', '-' or '$'.")
    return value


class MessageLabelsApi(_ActionApi):
    action = "labels"

    class LabelsInput(serializers.Serializer):
        add = serializers.ListField(child=serializers.CharField(max_length=64, validators=[_label]),
                                    required=False, default=list, max_length=20)
        remove = serializers.ListField(child=serializers.CharField(max_length=64, validators=[_label]),
                                       required=False, default=list, max_length=20)

        def validate(self, attrs):
            if not attrs["add"] and not attrs["remove"]:
                raise serializers.ValidationError("Add or remove at least one label.")
            if set(attrs["add"]) & set(attrs["remove"]):
                raise serializers.ValidationError("A label cannot be added and removed at once.")
            return attrs

    @extend_schema(request=LabelsInput, responses={202: None})
    def post(self, request, message_id):
        data = self.LabelsInput(data=request.data)
        data.is_valid(raise_exception=True)
        return self._queue(request, message_id, data.validated_data)


class MessageReadApi(_ActionApi):
    action = "read"

    class ReadInput(serializers.Serializer):
        unread = serializers.BooleanField()

    @extend_schema(request=ReadInput, responses={202: None})
    def post(self, request, message_id):
        data = self.ReadInput(data=request.data)
        data.is_valid(raise_exception=True)
        return self._queue(request, message_id, data.validated_data)
