"""Login throttling: failed attempts counted per account and per client address in the cache.

Counting failures (not requests) means a user who types the right password is never slowed down,
while guessing is capped at LOGIN_THROTTLE_MAX_FAILURES per account per window.
"""

import hashlib

from django.conf import settings
from django.core.cache import cache


def client_ip(request) -> str:
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None):
        # Behind our nginx, which appends the address it saw as the last X-Forwarded-For entry.
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[-1].strip()
    return request.META.get("REMOTE_ADDR", "")


def _key(kind: str, value: str) -> str:
    digest = hashlib.sha256(value.strip().lower().encode()).hexdigest()[:32]
    return f"login-fail:{kind}:{digest}"


def _count(key: str) -> int:
    return int(cache.get(key, 0))


def login_blocked(email: str, ip: str) -> bool:
    return (
        _count(_key("email", email)) >= settings.LOGIN_THROTTLE_MAX_FAILURES
        or _count(_key("ip", ip)) >= settings.LOGIN_THROTTLE_IP_MAX_FAILURES
    )


def record_login_failure(email: str, ip: str) -> None:
    window = settings.LOGIN_THROTTLE_WINDOW_SECONDS
    for key in (_key("email", email), _key("ip", ip)):
        if not cache.add(key, 1, timeout=window):
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.add(key, 1, timeout=window)


def clear_login_failures(email: str) -> None:
    cache.delete(_key("email", email))
