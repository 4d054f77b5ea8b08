"""Beat is a singleton: a second beat process stands by instead of scheduling every job twice.

At start-up beat takes a lease in the shared cache (Redis in production: SET NX with a TTL) and
renews it from a thread; a beat that cannot take it waits, retrying, and takes over within one TTL
after the holder dies. A holder that finds its lease taken by another (it was paused longer than the
TTL) stops, so two beats never run at once for longer than that. `make run` has one beat and an
in-process cache, where the lease is trivially its own.
"""

import logging
import os
import secrets
import threading
import time

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

LOCK_KEY = "ops:beat-singleton"


def _ttl() -> int:
    return settings.AIEMAILY_BEAT_LOCK_SECONDS


def acquire(token: str, *, wait: bool = True) -> bool:
    announced = False
    while True:
        if cache.add(LOCK_KEY, token, timeout=_ttl()):
            logger.info("beat: singleton lease taken", extra={"event": "beat_lease_taken"})
            return True
        if not wait:
            return False
        if not announced:
            logger.warning("beat: another beat holds the singleton lease; standing by",
                           extra={"event": "beat_standby"})
            announced = True
        time.sleep(max(0.2, _ttl() / 3))


def _renew_forever(token: str) -> None:
    while True:
        time.sleep(max(0.2, _ttl() / 3))
        if cache.get(LOCK_KEY) != token:
            logger.error("beat: the singleton lease was lost to another beat; stopping",
                         extra={"event": "beat_lease_lost"})
            os._exit(3)  # the service manager restarts us, and we stand by
        cache.touch(LOCK_KEY, timeout=_ttl())


def on_beat_init(sender=None, **kwargs) -> None:
    token = f"{os.getpid()}-{secrets.token_hex(8)}"
    acquire(token)
    threading.Thread(target=_renew_forever, args=(token,), name="beat-lease", daemon=True).start()
