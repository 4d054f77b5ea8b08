"""`GET /connections/autoconfig?email=…`: server settings for the IMAP connect form (JSON).

Answers from the bundled providers at once; otherwise asks the domain's own autoconfig through the
outbound-request guard (mail/autoconfig.py). Answers are cached for an hour (keyed by a hash of the
address, never the address itself), and each user gets a bounded number of lookups per minute, so
the form cannot be used to make us hammer a host.
"""

import hashlib

from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from mail import autoconfig

LOOKUPS_PER_MINUTE = 20
CACHE_SECONDS = 3600


def _over_limit(user_id) -> bool:
    key = f"autoconfig-lookups:{user_id}"
    if cache.add(key, 1, timeout=60):
        return False
    try:
        return cache.incr(key) > LOOKUPS_PER_MINUTE
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=60)
        return False


def _answer(found: dict | None) -> JsonResponse:
    return JsonResponse({"found": True, **found} if found else {"found": False})


@never_cache
@login_required
@require_GET
def autoconfig_lookup(request):
    address = request.GET.get("email", "").strip()
    if "@" not in address or len(address) > 254:
        return JsonResponse({"error": {"code": "invalid", "message": "Enter an e-mail address."}}, status=400)
    bundled = autoconfig.bundled_settings(address)
    if bundled is not None:
        return _answer(bundled.as_dict())
    cache_key = "autoconfig:" + hashlib.sha256(address.lower().encode()).hexdigest()
    cached = cache.get(cache_key)
    if cached is not None:
        return _answer(cached)
    if _over_limit(request.user.pk):
        return JsonResponse({"error": {"code": "throttled", "message": "Too many lookups; try again in a minute."}},
                            status=429)
    found = autoconfig.domain_settings(address)
    answer = found.as_dict() if found else {}
    cache.set(cache_key, answer, CACHE_SECONDS)
    return _answer(answer)
