"""The public pricing page: what each plan allows, from the same settings the plan limits use."""

from django.conf import settings
from django.shortcuts import render
from django.views.decorators.http import require_GET

from billing import plans


@require_GET
def pricing(request):
    return render(request, "public/pricing.html", {
        "configured": plans.billing_configured(),
        "free_name": plans.PLAN_NAMES[plans.FREE],
        "pro_name": plans.PLAN_NAMES[plans.PRO],
        "free_mailboxes": settings.AIEMAILY_BILLING_FREE_MAILBOXES,
        "pro_mailboxes": settings.AIEMAILY_BILLING_PRO_MAILBOXES,
        "grace_days": settings.AIEMAILY_BILLING_GRACE_DAYS,
        "pro_price": settings.AIEMAILY_BILLING_PRO_PRICE_LABEL,
    })
