"""A count per key over a fixed window, shared by every process through the cache (Redis in
production): how the CSP report endpoint and the webhook failure budget count a client address."""

from django.core.cache import cache


def count_in_window(key: str, window: int) -> int:
    """Add one to `key`'s count and return it; the count starts at the first hit and lasts `window` seconds."""
    if cache.add(key, 1, timeout=window):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=window)
        return 1
