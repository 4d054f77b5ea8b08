"""Assistant API: a thread's summary, reply drafts, and the user's AI settings.

Summaries are generated on demand and cached per thread state. `GET messages/{id}/summary`
answers 200 with the summary when it is ready, or 202 `{"status": "pending"}` with Retry-After
while worker-ai works; `?wait=N` (at most 10 s) holds the request until it is ready, for clients
that prefer one call. A failed attempt answers with the provider's problem as a JSON error (429
with Retry-After for rate limits, 502 otherwise); the next call after that tries again.
Model output is returned as plain text; it is data, never markup, never a command.
`POST drafts` also takes a message of a thread shared with the caller with the `draft` permission:
the draft is the delegate's own (offline, `"shared": true`, no mailbox to send from).
"""

import time
from email.utils import parseaddr

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from aiemaily.api.query import StrictIntegerField, query_params
from aiemaily.api.schema import ErrorDetail, error
from mail.assistant import services
from mail.assistant.models import AiResult, AiSettings
from mail.assistant.selectors import ai_result_get, ai_settings_get
from mail.selectors import delegated_draft_message_get, message_get
from secrets_vault.models import AiKey

MAX_WAIT_SECONDS = 10


class AiResultOutput(serializers.Serializer):
    id = serializers.UUIDField()
    message = serializers.UUIDField(source="message_id")
    kind = serializers.CharField()
    status = serializers.CharField()
    source = serializers.CharField()
    offline = serializers.SerializerMethodField()
    notice = serializers.SerializerMethodField()
    provider = serializers.CharField()
    model = serializers.CharField()
    redactions = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True, help_text="null while pending")

    def get_offline(self, obj) -> bool:
        return obj.source == AiResult.Source.OFFLINE

    def get_notice(self, obj) -> str:
        """Why a ready result came from somewhere else than the user chose (a delegate's draft, a plan)."""
        return obj.error_message if obj.status == AiResult.Status.READY else ""


# The shapes _answer() sends: the text once it is ready; an `error` (the envelope's) when it failed.
class SummaryOutput(AiResultOutput):
    summary = serializers.CharField(required=False, help_text="once status is done")


class DraftOutput(AiResultOutput):
    body_text = serializers.CharField(required=False, help_text="once status is done")
    connection = serializers.UUIDField(required=False)
    to = serializers.ListField(child=serializers.CharField(), required=False)
    subject = serializers.CharField(required=False)
    in_reply_to = serializers.CharField(required=False)
    sent = serializers.BooleanField(required=False)


class AiFailedOutput(AiResultOutput):
    error = ErrorDetail()


AI_FAILURES = {
    429: OpenApiResponse(AiFailedOutput, description="The AI provider's rate limit (`ai_rate_limited`), with "
                                                     "Retry-After; or this API's own rate limit (`throttled`)."),
    502: OpenApiResponse(AiFailedOutput, description="The AI provider failed (`ai_*`); the next call tries again."),
}


def _wait(result: AiResult, seconds: int) -> AiResult:
    deadline = time.monotonic() + min(max(seconds, 0), MAX_WAIT_SECONDS)
    while result.status == AiResult.Status.PENDING and time.monotonic() < deadline:
        time.sleep(0.1)
        result = AiResult.objects.for_owner(result.owner_id).get(pk=result.pk)
    return result


def _answer(result: AiResult, text_field: str, extra: dict | None = None) -> Response:
    data = AiResultOutput(result).data
    if result.status == AiResult.Status.PENDING:
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Retry-After": "1"})
    if result.status == AiResult.Status.ERROR:
        code = status.HTTP_429_TOO_MANY_REQUESTS if result.error_code == "rate_limited" else status.HTTP_502_BAD_GATEWAY
        headers = {"Retry-After": str(result.retry_after)} if result.retry_after is not None else {}
        body = {"error": {"code": f"ai_{result.error_code}", "message": result.error_message}, **data}
        return Response(body, status=code, headers=headers)
    data[text_field] = services.result_text(result=result)
    data.update(extra or {})
    return Response(data)


class WaitInput(serializers.Serializer):
    wait = StrictIntegerField(required=False, default=0, min_value=0, max_value=MAX_WAIT_SECONDS,
                              help_text="seconds to hold the request until the result is ready")


class MessageSummaryApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(parameters=[WaitInput], responses={200: SummaryOutput, 202: SummaryOutput, **AI_FAILURES})
    def get(self, request, message_id):
        wait = query_params(WaitInput, request)["wait"]
        message = message_get(owner=request.user, message_id=message_id)
        result = services.summary_request(owner=request.user, message=message)
        return _answer(_wait(result, wait), "summary")


def _draft_extra(result: AiResult) -> dict:
    message = result.message
    subject = message.subject if message.subject.lower().startswith("re:") else f"Re: {message.subject}"
    shared = message.owner_id != result.owner_id  # a delegate's draft: text only, the mailbox is not theirs
    return {"connection": None if shared else str(message.connection_id), "shared": shared,
            "to": [parseaddr(message.from_addr)[1] or message.from_addr],  # bare, as outbox takes it
            "subject": subject, "in_reply_to": message.message_id, "sent": False}


def _draft_message(user, message_id):
    """The user's own message, or one of a thread shared with them with the draft permission."""
    try:
        return message_get(owner=user, message_id=message_id)
    except Http404:
        return delegated_draft_message_get(delegate=user, message_id=message_id)


class DraftListApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    class DraftInput(serializers.Serializer):
        message = serializers.UUIDField()
        instruction = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")
        tone = serializers.ChoiceField(choices=AiResult.Tone.choices, required=False, default="neutral")
        wait = serializers.IntegerField(required=False, default=0, min_value=0, max_value=MAX_WAIT_SECONDS)

    @extend_schema(request=DraftInput, responses={201: DraftOutput, 202: DraftOutput, **AI_FAILURES,
                                                  404: error("No such message for this user (`not_found`).")})
    def post(self, request):
        data = self.DraftInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        message = _draft_message(request.user, values["message"])
        result = services.draft_request(owner=request.user, message=message, instruction=values["instruction"],
                                        tone=values["tone"])
        response = _answer(_wait(result, values["wait"]), "body_text", _draft_extra(result))
        if response.status_code == 200:
            response.status_code = status.HTTP_201_CREATED
        return response


class DraftDetailApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(parameters=[WaitInput], responses={200: DraftOutput, 202: DraftOutput, **AI_FAILURES})
    def get(self, request, draft_id):
        wait = query_params(WaitInput, request)["wait"]
        result = ai_result_get(owner=request.user, result_id=draft_id, kind=AiResult.Kind.DRAFT)
        result = _wait(result, wait)
        return _answer(result, "body_text", _draft_extra(result))


class AiSettingsOutput(serializers.Serializer):
    mode = serializers.CharField()
    ai_key = serializers.UUIDField(source="ai_key_id", allow_null=True)
    model = serializers.CharField()
    third_party_enabled = serializers.BooleanField()
    redact_cards = serializers.BooleanField()
    redact_ibans = serializers.BooleanField()
    redact_codes = serializers.BooleanField()
    redact_passwords = serializers.BooleanField()


class AiSettingsApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    class SettingsInput(serializers.Serializer):
        mode = serializers.ChoiceField(choices=AiSettings.Mode.choices, required=False)
        ai_key = serializers.UUIDField(required=False, allow_null=True)
        # {1,100}: the empty string is allowed by allow_blank alone. With {0,100} the schema's two
        # branches (pattern, or maxLength 0) both matched "", which oneOf forbids (found by the fuzzer).
        model = serializers.RegexField(r"^[A-Za-z0-9._:/@-]{1,100}$", required=False, allow_blank=True)
        third_party_enabled = serializers.BooleanField(required=False)
        redact_cards = serializers.BooleanField(required=False)
        redact_ibans = serializers.BooleanField(required=False)
        redact_codes = serializers.BooleanField(required=False)
        redact_passwords = serializers.BooleanField(required=False)

    @extend_schema(responses=AiSettingsOutput)
    def get(self, request):
        return Response(AiSettingsOutput(ai_settings_get(owner=request.user)).data)

    @extend_schema(request=SettingsInput, responses=AiSettingsOutput)
    def patch(self, request):
        data = self.SettingsInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        if "ai_key" in values:
            key_id = values.pop("ai_key")
            # Another owner's key id is indistinguishable from a missing one.
            values["ai_key"] = AiKey.objects.for_owner(request.user).filter(pk=key_id).first() if key_id else None
            if key_id and values["ai_key"] is None:
                raise serializers.ValidationError({"ai_key": "No such AI key."})
        current = ai_settings_get(owner=request.user)
        if values.get("mode", current.mode) == AiSettings.Mode.BYOK and not values.get("ai_key", current.ai_key):
            raise serializers.ValidationError({"ai_key": "Choose one of your AI keys for this mode."})
        prefs = services.ai_settings_update(owner=request.user, **values)
        return Response(AiSettingsOutput(prefs).data)
