"""Outbox API: `POST outbox` records a message and returns 202; a worker sends it exactly once."""

from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from aiemaily.api.pagination import CreatedCursorPagination
from aiemaily.api.schema import error
from mail.selectors import connection_get, outbox_get, outbox_list
from mail.services import outbox_create


def _single_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise serializers.ValidationError("Must be a single line.")
    return value


class OutboxInput(serializers.Serializer):
    connection = serializers.UUIDField()
    to = serializers.ListField(child=serializers.EmailField(max_length=254), min_length=1, max_length=100)
    cc = serializers.ListField(child=serializers.EmailField(max_length=254), max_length=100, required=False,
                               default=list)
    subject = serializers.CharField(max_length=998, allow_blank=True, trim_whitespace=False,
                                    validators=[_single_line])
    body_text = serializers.CharField(max_length=500_000, allow_blank=True, trim_whitespace=False)
    in_reply_to = serializers.CharField(max_length=998, required=False, allow_blank=True, default="",
                                        validators=[_single_line])


class OutboxOutput(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    message_id = serializers.CharField()
    connection = serializers.UUIDField(source="connection_id")
    to = serializers.ListField(source="to_addrs", child=serializers.CharField())
    cc = serializers.ListField(source="cc_addrs", child=serializers.CharField())
    subject = serializers.CharField()
    last_error = serializers.CharField(source="error_text")  # the refused recipients named (sealed)
    created_at = serializers.DateTimeField()
    sent_at = serializers.DateTimeField(allow_null=True)


class OutboxListApi(ListAPIView):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = OutboxOutput
    pagination_class = CreatedCursorPagination

    def get_queryset(self):
        return outbox_list(owner=self.request.user)

    @extend_schema(request=OutboxInput, responses={
        202: OutboxOutput, 404: error("No such connection for this user (`not_found`).")})
    def post(self, request):
        data = OutboxInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        connection = connection_get(owner=request.user, connection_id=values["connection"])
        if not connection.can_send:
            raise serializers.ValidationError({"connection": "This mailbox cannot send right now."})
        row = outbox_create(owner=request.user, connection=connection, to=values["to"], cc=values["cc"],
                            subject=values["subject"], body_text=values["body_text"],
                            in_reply_to=values["in_reply_to"])
        return Response(OutboxOutput(row).data, status=status.HTTP_202_ACCEPTED)


class OutboxDetailApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses=OutboxOutput)
    def get(self, request, outbox_id):
        row = outbox_get(owner=request.user, outbox_id=outbox_id)
        return Response(OutboxOutput(row).data)
