"""Messages API: the owner's synced mail (metadata list; one message with its decrypted body)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, permissions, serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from aiemaily.api.fields import renamed_field
from aiemaily.api.pagination import CreatedCursorPagination
from aiemaily.api.query import StrictBooleanField, StrictUUIDField, query_params
from mail import blobstore, search_index, services
from mail.assistant.models import AiResult
from mail.assistant.selectors import with_triage
from mail.attachments import attachment_response
from mail.models import LABEL
from mail.parsing import attachment, body_parts, thread_source
from mail.selectors import connection_get, message_actionable, message_get, message_list


class MessagePagination(CreatedCursorPagination):
    ordering = ("-date", "-id")


@renamed_field("sender", "from")  # `from` is a Python keyword; the contract names it so
class MessageOutput(serializers.Serializer):
    id = serializers.UUIDField()
    connection = serializers.UUIDField(source="connection_id")
    folder = serializers.CharField(source="folder.name")
    message_id = serializers.CharField()
    subject = serializers.CharField()
    sender = serializers.CharField(source="from_addr")
    to = serializers.ListField(source="to_addrs", child=serializers.CharField())
    date = serializers.DateTimeField(allow_null=True)
    unread = serializers.BooleanField()
    labels = serializers.ListField(child=serializers.CharField())
    snippet = serializers.CharField()
    thread_id = serializers.CharField()
    thread_source = serializers.SerializerMethodField(help_text="provider (not forgeable by a sender) or headers")
    triage = serializers.SerializerMethodField()

    def get_thread_source(self, obj) -> str:
        return thread_source(obj.thread_id)

    def get_triage(self, obj) -> dict | None:
        """The assistant's category and priority (opted-in mailboxes), or null."""
        category = getattr(obj, "triage_category", None)
        return {"category": category, "priority": obj.triage_priority} if category else None


class AttachmentOutput(serializers.Serializer):
    n = serializers.IntegerField(help_text="its number in GET messages/{id}/attachments/{n}")
    name = serializers.CharField()
    content_type = serializers.CharField()
    size = serializers.IntegerField(help_text="bytes, decoded")


class MessageDetailOutput(MessageOutput):
    body_text = serializers.CharField()
    body_html = serializers.CharField(help_text="sanitised HTML, safe to display")
    headers = serializers.DictField(child=serializers.CharField(), help_text="From, To, Cc, Subject, Date, "
                                                                          "Message-ID when present")
    parse_error = serializers.CharField(help_text="why the message is shown as well as it could be read; "
                                                  "empty when it parsed cleanly")
    attachments = AttachmentOutput(many=True)


class MessageFilters(serializers.Serializer):
    connection = StrictUUIDField(required=False)
    # Folder and label names are matched exactly as given (IMAP names may hold any character), never
    # trimmed: Python's strip() also removes control characters such as \x1e that the schema's
    # minLength counts, so a trimmed "\x1e" was refused as blank although the schema allows it.
    # The bounds keep every valid request line within gunicorn's and nginx's 8 KiB even when each
    # character is four bytes of UTF-8, sent as twelve (tests/project/test_openapi.py adds it up).
    folder = serializers.CharField(required=False, max_length=300, trim_whitespace=False)
    label = serializers.CharField(required=False, max_length=100, trim_whitespace=False)
    unread = StrictBooleanField(required=False)
    q = serializers.CharField(required=False, max_length=200, allow_blank=True,
                              help_text="text in the subject or sender; empty means no text filter")
    category = serializers.ChoiceField(choices=AiResult.Category.choices, required=False)
    priority = serializers.ChoiceField(choices=AiResult.Priority.choices, required=False)


class MessageListApi(ListAPIView):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = MessageOutput
    pagination_class = MessagePagination

    @extend_schema(parameters=[MessageFilters])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        owner = self.request.user
        self.filters = query_params(MessageFilters, self.request)
        return with_triage(message_list(owner=owner, filters=self.filters), owner=owner)

    def paginate_queryset(self, queryset):
        # The cursor is taken from the page as read; only what is shown is re-checked against the
        # decrypted subject and sender (search_index.recheck: no 64-bit hash collision is shown).
        page = super().paginate_queryset(queryset)
        return page if page is None else search_index.recheck(page, self.filters.get("q"))


class MessageDetailApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses=MessageDetailOutput)
    def get(self, request, message_id):
        message = message_get(owner=request.user, message_id=message_id)
        data = MessageOutput(message).data
        try:
            raw = services.message_body_open(reader=request.user, message=message, view="API message detail")
        except blobstore.BlobError:
            raise exceptions.APIException("The stored copy of this message could not be opened.") from None
        parts = body_parts(raw)
        malformed = parts.pop("malformed")
        data.update(parts)
        data["parse_error"] = message.parse_error or malformed
        return Response(data)


class MessageAttachmentApi(APIView):
    """One attachment's bytes, decrypted from the owner's stored message (another owner's: 404)."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request, message_id, n):
        message = message_get(owner=request.user, message_id=message_id)
        try:
            raw = blobstore.get(request.user.pk, message.blob_key)
        except blobstore.BlobError:
            raise exceptions.APIException("The stored copy of this message could not be opened.") from None
        found = attachment(raw, n)
        if found is None:
            raise exceptions.NotFound("This message has no such attachment.")
        return attachment_response(*found)


class SyncQueuedOutput(serializers.Serializer):
    id = serializers.UUIDField()
    sync = serializers.ChoiceField(choices=["queued"])


class ActionQueuedOutput(serializers.Serializer):
    id = serializers.UUIDField()
    action = serializers.ChoiceField(choices=["archive", "labels", "read"])
    status = serializers.ChoiceField(choices=["queued"])


class ConnectionSyncApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=None, responses={202: SyncQueuedOutput},
                   parameters=[OpenApiParameter("connection_id", OpenApiTypes.UUID, OpenApiParameter.PATH)])
    def post(self, request, connection_id):
        connection = connection_get(owner=request.user, connection_id=connection_id)
        if not connection.can_sync:
            raise exceptions.ValidationError({"connection": "Only an active, signed-in connection can sync now."})
        services.connection_sync_dispatch(connection=connection)
        return Response({"id": str(connection.pk), "sync": "queued"}, status=status.HTTP_202_ACCEPTED)


class _ActionApi(APIView):
    permission_classes = [permissions.IsAuthenticated]
    action = ""

    def _queue(self, request, message_id, params):
        message = message_get(owner=request.user, message_id=message_id)
        if not message_actionable(message):
            raise exceptions.ValidationError({"message": "This message's mailbox cannot be changed right now."})
        services.message_action_queue(message=message, action=self.action, params=params)
        return Response({"id": str(message.pk), "action": self.action, "status": "queued"},
                        status=status.HTTP_202_ACCEPTED)


class MessageArchiveApi(_ActionApi):
    action = "archive"

    @extend_schema(request=None, responses={202: ActionQueuedOutput})
    def post(self, request, message_id):
        return self._queue(request, message_id, {})


class LabelField(serializers.RegexField):
    """An IMAP atom (mail.models.LABEL), which the schema shows as its pattern."""

    def __init__(self, **kwargs):
        super().__init__(LABEL.pattern, max_length=64, **kwargs)
        self.error_messages["invalid"] = "Labels are 1-64 letters, digits, '.', '_', '-' or '$'."


class MessageLabelsApi(_ActionApi):
    action = "labels"

    class LabelsInput(serializers.Serializer):
        add = serializers.ListField(child=LabelField(), required=False, default=list, max_length=20)
        remove = serializers.ListField(child=LabelField(), required=False, default=list, max_length=20)

        def validate(self, attrs):
            if not attrs["add"] and not attrs["remove"]:
                raise serializers.ValidationError("Add or remove at least one label.")
            if set(attrs["add"]) & set(attrs["remove"]):
                raise serializers.ValidationError("A label cannot be added and removed at once.")
            return attrs

    @extend_schema(request=LabelsInput, responses={202: ActionQueuedOutput})
    def post(self, request, message_id):
        data = self.LabelsInput(data=request.data)
        data.is_valid(raise_exception=True)
        return self._queue(request, message_id, data.validated_data)


class MessageReadApi(_ActionApi):
    action = "read"

    class ReadInput(serializers.Serializer):
        unread = serializers.BooleanField()

    @extend_schema(request=ReadInput, responses={202: ActionQueuedOutput})
    def post(self, request, message_id):
        data = self.ReadInput(data=request.data)
        data.is_valid(raise_exception=True)
        return self._queue(request, message_id, data.validated_data)
