"""Vault API: the audit trail and BYOK AI keys. No call ever returns a secret."""

from django.shortcuts import get_object_or_404
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from aiemaily.api.pagination import CreatedCursorPagination
from secrets_vault.ai_key_rules import ai_key_problems
from secrets_vault.api.fields import SecretField
from secrets_vault.models import AiKey
from secrets_vault.selectors import ai_key_list, audit_get, audit_list
from secrets_vault.services import ai_key_add, ai_key_delete


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


class AiKeyOutput(serializers.Serializer):
    id = serializers.UUIDField()
    provider = serializers.CharField()
    base_url = serializers.CharField()
    hint = serializers.SerializerMethodField()
    state = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_hint(self, obj) -> str:
        return f"…{obj.secret.hint}" if obj.secret.hint else ""

    def get_state(self, obj) -> str:
        return obj.secret.state


@method_decorator(sensitive_post_parameters("key"), name="dispatch")
class AiKeyListApi(ListAPIView):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = AiKeyOutput
    pagination_class = CreatedCursorPagination

    class AiKeyInput(serializers.Serializer):
        provider = serializers.ChoiceField(choices=AiKey.Provider.choices)
        key = SecretField(max_length=400)
        base_url = serializers.URLField(max_length=300, required=False, allow_blank=True, default="")

        def validate(self, attrs):
            problems = ai_key_problems(provider=attrs["provider"], key=attrs["key"].reveal(),
                                       base_url=attrs.get("base_url") or "")
            if problems:
                raise serializers.ValidationError(problems)
            return attrs

    def get_queryset(self):
        return ai_key_list(owner=self.request.user)

    @extend_schema(request=AiKeyInput, responses={201: AiKeyOutput})
    def post(self, request):
        data = self.AiKeyInput(data=request.data)
        data.is_valid(raise_exception=True)
        ai_key = ai_key_add(owner=request.user, **data.validated_data)
        return Response(AiKeyOutput(ai_key).data, status=status.HTTP_201_CREATED)


class AiKeyDetailApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    def _get(self, request, key_id) -> AiKey:
        return get_object_or_404(ai_key_list(owner=request.user), pk=key_id)

    @extend_schema(responses=AiKeyOutput)
    def get(self, request, key_id):
        return Response(AiKeyOutput(self._get(request, key_id)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, key_id):
        ai_key_delete(owner=request.user, ai_key=self._get(request, key_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
