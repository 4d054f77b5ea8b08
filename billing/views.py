"""Billing pages: the plan and status, and the two POSTs that send the browser to Stripe's hosted
Checkout and Customer Portal. No card field is ever ours; returning from Stripe changes nothing here
(state comes only from verified events)."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from rest_framework.exceptions import APIException

from billing import plans, services
from billing.selectors import billing_account_get, plan_limits_for


def _admit_stripe_forms(response):
    # The upgrade/manage forms post to us and we redirect to Stripe's hosted page; browsers check
    # that redirect against form-action, so these pages (only these) admit Stripe's hosted origins
    # (django-csp merges this into the policy, as its @csp_update decorator does).
    response._csp_update = {"form-action": list(settings.STRIPE_HOSTED_ORIGINS)}
    return response


def _context(request) -> dict:
    account = billing_account_get(owner=request.user)
    limits = plan_limits_for(request.user)
    return {
        "configured": plans.billing_configured(),
        "account": account,
        "limits": limits,
        "plan_name": plans.PLAN_NAMES.get(limits.plan, limits.plan),
        "has_customer": bool(account and account.stripe_customer_id),
        "subscribed": bool(account and account.status in ("active", "trialing", "past_due", "unpaid", "paused")),
    }


@login_required
@require_GET
def billing_page(request):
    return _admit_stripe_forms(render(request, "billing/billing.html", _context(request)))


@login_required
@require_POST
def checkout(request):
    if not plans.billing_configured():
        messages.error(request, "Billing is not configured on this server.")
        return redirect("billing:index")
    plan = request.POST.get("plan", plans.PRO)
    if plan != plans.PRO:
        messages.error(request, "Choose a plan to upgrade to.")
        return redirect("billing:index")
    try:
        url = services.checkout_start(owner=request.user, plan=plan,
                                      success_url=request.build_absolute_uri(reverse("billing:success")),
                                      cancel_url=request.build_absolute_uri(reverse("billing:cancelled")))
    except APIException as exc:
        messages.error(request, str(exc.detail))
        return redirect("billing:index")
    return redirect(url)


@login_required
@require_POST
def portal(request):
    if not plans.billing_configured():
        messages.error(request, "Billing is not configured on this server.")
        return redirect("billing:index")
    try:
        url = services.portal_start(owner=request.user, return_url=request.build_absolute_uri(reverse("billing:index")))
    except APIException as exc:
        messages.error(request, str(exc.detail))
        return redirect("billing:index")
    return redirect(url)


@login_required
@require_GET
def success(request):
    # The session id in the query is not trusted for anything: the plan changes when Stripe's
    # verified event arrives, which may be a moment after the browser does.
    return render(request, "billing/success.html", _context(request))


@login_required
@require_GET
def cancelled(request):
    return render(request, "billing/cancelled.html", _context(request))


@login_required
@require_GET
def status(request):
    """What the success page polls until Stripe's event has arrived (session-authenticated JSON)."""
    account = billing_account_get(owner=request.user)
    return JsonResponse({"plan": plan_limits_for(request.user).plan, "status": account.status if account else ""})
