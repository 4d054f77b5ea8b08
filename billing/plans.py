"""Plans and what each allows. Plans come from settings (a Stripe price id per paid plan); Free needs
no Stripe at all. Pure functions over a BillingAccount: the limits themselves live in selectors.py."""

from dataclasses import dataclass

from django.conf import settings

FREE = "free"
PRO = "pro"
PLAN_NAMES = {FREE: "Free", PRO: "Pro"}


def limits_apply() -> bool:
    """Plans are sold here (a Pro price is configured), so Free's limits apply. Decided from the price
    id alone, which is not a secret: worker-ai checks the platform-AI limit without holding the Stripe
    key. A process with the price but no key still limits (fail closed); it just cannot sell."""
    return bool(settings.STRIPE_PRICE_PRO)


def billing_configured() -> bool:
    """Stripe is set up (secret key and a Pro price): upgrades are possible and plan limits apply."""
    return bool(settings.STRIPE_SECRET_KEY and limits_apply())


def plan_for_price(price_id: str) -> str:
    """The plan a Stripe price id buys; an unknown price (say, an archived one) buys nothing extra."""
    if price_id and price_id == settings.STRIPE_PRICE_PRO:
        return PRO
    return FREE


def price_for_plan(plan: str) -> str:
    if plan == PRO and settings.STRIPE_PRICE_PRO:
        return settings.STRIPE_PRICE_PRO
    raise ValueError(f"no Stripe price is configured for plan {plan!r}")


@dataclass(frozen=True)
class PlanLimits:
    plan: str                 # the plan whose limits apply now (free while a payment is overdue too long)
    status: str               # the subscription's status at Stripe, "" if never subscribed
    max_mailboxes: int | None  # None: no limit (billing not configured)
    platform_ai: bool         # AI on the platform's key
    byok_ai: bool             # AI on the user's own key: always, on every plan
    reason: str               # why the limits are what they are, fit to show the user

    def as_dict(self) -> dict:
        return {"plan": self.plan, "status": self.status, "max_mailboxes": self.max_mailboxes,
                "platform_ai": self.platform_ai, "byok_ai": self.byok_ai, "reason": self.reason}
