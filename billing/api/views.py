"""GET /api/v1/billing: the caller's plan, subscription status and limits. Read-only: plans change
through Stripe's hosted pages and verified events, never through this API."""

from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import plans
from billing.selectors import billing_account_get, plan_limits_for


class BillingOutput(serializers.Serializer):
    configured = serializers.BooleanField()
    plan = serializers.CharField()
    status = serializers.CharField()
    current_period_end = serializers.DateTimeField(allow_null=True)
    cancel_at_period_end = serializers.BooleanField()
    limits = serializers.DictField()


class BillingGetApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses=BillingOutput)
    def get(self, request):
        account = billing_account_get(owner=request.user)
        limits = plan_limits_for(request.user)
        return Response(BillingOutput({
            "configured": plans.billing_configured(),
            "plan": limits.plan,
            "status": account.status if account else "",
            "current_period_end": account.current_period_end if account else None,
            "cancel_at_period_end": bool(account and account.cancel_at_period_end),
            "limits": {"max_mailboxes": limits.max_mailboxes, "platform_ai": limits.platform_ai,
                       "byok_ai": limits.byok_ai, "reason": limits.reason},
        }).data)
