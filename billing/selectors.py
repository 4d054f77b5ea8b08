"""Reads of the billing app: a user's billing state and the limits their plan gives them.

`plan_limits_for(user)` is what other apps ask (connections before adding a mailbox, the AI helper
before using the platform key); `billing.services.limit_check` turns it into a refusal.
"""

import datetime as dt

from django.conf import settings
from django.utils import timezone

from billing import plans
from billing.models import BillingAccount
from billing.plans import PlanLimits


def billing_account_get(*, owner) -> BillingAccount | None:
    return BillingAccount.objects.for_owner(owner).first()


def _paid_access(account: BillingAccount | None, now: dt.datetime) -> tuple[bool, str]:
    """Whether the subscription gives its plan's features now, and why (a sentence for the user)."""
    if account is None or not account.status:
        return False, "You have no subscription."
    if account.status in ("active", "trialing"):
        return True, ""
    if account.status == "past_due":
        grace = dt.timedelta(days=settings.AIEMAILY_BILLING_GRACE_DAYS)
        since = account.past_due_since or account.state_as_of or now
        if now < since + grace:
            return True, "Your last payment failed; please update your payment method."
        return False, "Your payment is overdue and the grace period has ended."
    if account.status == "canceled":
        return False, "Your subscription has ended."
    return False, f"Your subscription is {account.get_status_display()}."


def plan_limits_for(user, *, now: dt.datetime | None = None) -> PlanLimits:
    """The limits that apply to `user` right now."""
    if not plans.limits_apply():
        return PlanLimits(plan=plans.FREE, status="", max_mailboxes=None, platform_ai=True, byok_ai=True,
                          reason="Billing is not configured on this server: nothing is limited.")
    account = billing_account_get(owner=user)
    paid, reason = _paid_access(account, now or timezone.now())
    plan = account.plan if paid and account is not None else plans.FREE
    if plan == plans.PRO:
        return PlanLimits(plan=plan, status=account.status, max_mailboxes=settings.AIEMAILY_BILLING_PRO_MAILBOXES,
                          platform_ai=True, byok_ai=True, reason=reason)
    return PlanLimits(plan=plans.FREE, status=account.status if account else "",
                      max_mailboxes=settings.AIEMAILY_BILLING_FREE_MAILBOXES, platform_ai=False, byok_ai=True,
                      reason=reason or "You are on the Free plan.")


UPGRADE_PATH = "/billing/"


def limit_reason(*, owner, feature: str, current: int = 0) -> str:
    """Why `owner`'s plan does not allow `feature` now, as a sentence for the user; "" if it does.

    feature "mailboxes": `current` is how many the owner has; one more must fit.
    feature "platform_ai": AI on the platform's key (BYOK needs no check: every plan has it).
    Pages show this beside an upgrade link; services raise it as PlanLimitReached.
    """
    limits = plan_limits_for(owner)
    if feature == "mailboxes":
        if limits.max_mailboxes is not None and current >= limits.max_mailboxes:
            return (f"Your {plans.PLAN_NAMES.get(limits.plan, limits.plan)} plan allows "
                    f"{limits.max_mailboxes} mailbox{'es' if limits.max_mailboxes != 1 else ''}. "
                    f"{limits.reason} Disconnect a mailbox or upgrade at {UPGRADE_PATH}.")
        return ""
    if feature == "platform_ai":
        if not limits.platform_ai:
            return (f"AI on Aiemaily's key needs an active Pro subscription. {limits.reason} "
                    f"Upgrade at {UPGRADE_PATH}, or use your own AI key (works on every plan) or the offline AI.")
        return ""
    raise ValueError(f"unknown feature {feature!r}")
