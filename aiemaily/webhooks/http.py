"""What every webhook route shares: POST only, CSRF-exempt (these routes and no others), no CORS
(CORS_URLS_REGEX never matches /webhooks/), a body-size cap read defensively, one content type,
and a rate limit that counts *failures* only.

Why failures only. A flood of forged deliveries must not starve genuine ones. Counting every
request per route would let an attacker spend the provider's quota; counting per client address
all requests would still make the provider's own addresses share a budget with nothing. So a
delivery that fails authentication (or is malformed) costs its sender's address one unit of
AIEMAILY_WEBHOOK_FAILURE_LIMIT per window, counted in the shared cache (every web worker adds to the
same count). The failure that goes past the limit is answered 429 and nothing is written for it; from
then on, for the window, this process answers that address 429 before any work, from memory.

Genuine deliveries never fail, so they never consume anything, and checking the budget costs them
nothing either: the shared count is only touched when a delivery has already failed, and the
addresses over budget are remembered in the process. (Reading the count first on every delivery was
a cache round trip on each genuine one: a fifth of a delivery's cost, benchmarks/bench_webhooks.py.)
Verification itself is cheap (an HMAC, an RSA verify against cached certificates, a keyed hash) so
the failures under the limit cost little. Volume floods from many addresses are nginx's job
(limit_req), not this one's.
"""

import logging
import threading
import time
from functools import wraps

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from aiemaily.security import window_count
from aiemaily.security.client_ip import client_ip
from aiemaily.webhooks.models import Verdict

logger = logging.getLogger("aiemaily.webhooks")


class Rejected(Exception):
    """A delivery we drop: `verdict` for the ledger, `status` for the provider, no reason given."""

    def __init__(self, verdict: str, status: int, *, delivery_id: object = "", kind: object = "", account_id=None):
        super().__init__(verdict)
        self.verdict, self.status = verdict, status
        self.delivery_id, self.kind, self.account_id = delivery_id, kind, account_id


def webhook_endpoint(view=None, *, atomic: bool = True):
    """POST only, CSRF-exempt, never cached: the decorations every webhook route needs, in one place.

    The mark `webhook_endpoint = True` sends the route down the lean middleware path
    (aiemaily/webhooks/middleware.py): no session, user, messages or owner binding, which no
    webhook uses. There the view runs in one transaction (its writes commit together, its hand-off
    is published on commit) unless it says `atomic=False`: only for a view whose every outcome is a
    single write, where BEGIN and COMMIT would be two more round trips buying nothing.
    """
    def decorate(view):
        decorated = csrf_exempt(never_cache(require_POST(wraps(view)(view))))
        decorated.webhook_endpoint, decorated.webhook_atomic = True, atomic
        return decorated

    return decorate(view) if view is not None else decorate


def empty(status: int) -> HttpResponse:
    """An answer without a reason: the status the provider expects, an empty body."""
    return HttpResponse(status=status)


def _failure_key(provider: str, ip: str) -> str:
    return f"webhook-fail:{provider}:{ip}"


# (provider, address) -> monotonic time its window ends: the addresses this process found over budget.
# Bounded, so an attacker rotating through addresses cannot grow it without limit. Written under a lock:
# a threaded worker pruning it while another thread adds would otherwise fail mid-iteration.
_over_budget: dict[tuple[str, str], float] = {}
_over_budget_lock = threading.Lock()
_OVER_BUDGET_MAX = 10_000


def throttled(provider: str, ip: str) -> bool:
    """True while this process knows the address is over its failure budget: answer 429, do nothing."""
    until = _over_budget.get((provider, ip))
    if until is None:
        return False
    if until > time.monotonic():
        return True
    _over_budget.pop((provider, ip), None)
    return False


def _remember_over_budget(provider: str, ip: str, window: int) -> None:
    now = time.monotonic()
    with _over_budget_lock:
        if len(_over_budget) >= _OVER_BUDGET_MAX:
            for key in [key for key, until in _over_budget.items() if until <= now] or list(_over_budget)[:1]:
                _over_budget.pop(key, None)
        _over_budget[(provider, ip)] = now + window


def count_failure(provider: str, ip: str) -> bool:
    """Count one failed delivery from `ip`. True when that took the address past its budget: then answer
    429 and record nothing (the address is remembered here for the window)."""
    window, limit = settings.AIEMAILY_WEBHOOK_FAILURE_WINDOW_SECONDS, settings.AIEMAILY_WEBHOOK_FAILURE_LIMIT
    count = window_count.count_in_window(_failure_key(provider, ip), window)
    if count == limit:
        logger.warning("webhook failures from one address reached the limit; answering 429 for the window",
                       extra={"event": "webhook_throttled", "provider": provider, "client_ip": ip})
    if count > limit:
        _remember_over_budget(provider, ip, window)
        return True
    return False


def content_type(request) -> str:
    return request.META.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()


def read_body(request, *, limit: int, content_types: frozenset[str], malformed_status: int) -> bytes:
    """The raw body, or Rejected(malformed): wrong content type, a declared or actual size over `limit`."""
    if content_type(request) not in content_types:
        raise Rejected(Verdict.MALFORMED, malformed_status)
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = -1
    if declared < 0 or declared > limit:
        raise Rejected(Verdict.MALFORMED, malformed_status)
    # Read at most limit+1 bytes whatever Content-Length said: it is never trusted for the cap.
    raw = request.read(limit + 1)
    if len(raw) > limit or not raw:
        raise Rejected(Verdict.MALFORMED, malformed_status)
    return raw


def client_address(request) -> str:
    return client_ip(request)
