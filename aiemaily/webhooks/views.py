"""The per-user page of recent webhook activity: metadata only (provider, kind, verdict, time),
the user's own deliveries (for_account), and the push channels of their mailboxes."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from aiemaily.webhooks.selectors import deliveries_recent_for_account, subscriptions_for_account


@never_cache
@require_GET
@login_required
def activity_page(request):
    return render(request, "webhooks/activity.html", {
        "deliveries": deliveries_recent_for_account(account=request.user),
        "channels": subscriptions_for_account(account=request.user),
    })
