"""Plan limits for the platform key (billing's decision; never applied to BYOK or offline).

`platform_ai_allowed` is what worker-ai asks right before it would spend the platform key: the web
side already refused a new request on a plan without it (mail/assistant/services.py), and this
second check catches a subscription that lapsed while the request waited. It reads the stored
billing state only (no Stripe call, no Stripe key in worker-ai).
"""

from dataclasses import dataclass

from aiemaily.ownership.binding import owner_scope
from billing.selectors import limit_reason


@dataclass(frozen=True)
class Allowance:
    allowed: bool
    reason: str = ""


def platform_ai_allowed(*, owner_id, kind: str) -> Allowance:
    """May this owner spend one platform-key request of `kind` (summary, draft, triage) now?"""
    with owner_scope(owner_id):
        reason = limit_reason(owner=owner_id, feature="platform_ai")
    return Allowance(not reason, reason)
