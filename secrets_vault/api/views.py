"""Audit API: the user's own record of every use of their secrets."""

from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from aiemaily.api.pagination import CreatedCursorPagination
from secrets_vault.selectors import audit_get, audit_list


class AuditEventOutput(serializers.Serializer):
    id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    action = serializers.CharField()
    purpose = serializers.CharField()
    process = serializers.CharField()
    subject = serializers.CharField()
    detail = serializers.CharField()


class AuditListApi(ListAPIView):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = AuditEventOutput
    pagination_class = CreatedCursorPagination

    def get_queryset(self):
        return audit_list(owner=self.request.user)


class AuditDetailApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses=AuditEventOutput)
    def get(self, request, event_id):
        return Response(AuditEventOutput(audit_get(owner=request.user, event_id=event_id)).data)
