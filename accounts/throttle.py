"""Sign-in throttling: failed password (and second-factor) checks counted per account *and* client
address, and per client address alone, in the cache.

Counting failures (not requests) means a user who types the right password is never slowed down.
The account's counter is keyed by the pair (account, address): an attacker guessing from elsewhere
blocks only their own address for that account, never the owner's sign-in from theirs. The price,
accepted on purpose: a botnet gets LOGIN_THROTTLE_MAX_FAILURES guesses per address per account per
window, which the per-address cap across accounts and password strength rules bound. Every password
check a person can drive goes through here: the sign-in page, the API token, the staff admin's
login and the password confirmation of account deletion.
"""

import hashlib

from django.conf import settings
from django.core.cache import cache


def _digest(value: str) -> str:
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()[:32]


def _keys(email: str, ip: str) -> tuple[str, str]:
    return f"login-fail:pair:{_digest(email)}:{_digest(ip)}", f"login-fail:ip:{_digest(ip)}"


def _count(key: str) -> int:
    return int(cache.get(key, 0))


def login_blocked(email: str, ip: str) -> bool:
    pair, address = _keys(email, ip)
    return (_count(pair) >= settings.LOGIN_THROTTLE_MAX_FAILURES
            or _count(address) >= settings.LOGIN_THROTTLE_IP_MAX_FAILURES)


def record_login_failure(email: str, ip: str) -> None:
    window = settings.LOGIN_THROTTLE_WINDOW_SECONDS
    for key in _keys(email, ip):
        if not cache.add(key, 1, timeout=window):
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.add(key, 1, timeout=window)


def clear_login_failures(email: str, ip: str) -> None:
    """A successful sign-in forgets that pair's failures (the address's own count stays)."""
    cache.delete(_keys(email, ip)[0])


class PasswordThrottled(Exception):
    """Too many failed password checks for this account from this address (or from this address)."""


def password_check_throttled(user, password: str, ip: str) -> bool:
    """A password re-check for a signed-in user (account deletion, turning off the second factor),
    counted like a sign-in: a stolen session cannot be used to guess the password at full speed."""
    if login_blocked(user.email, ip):
        raise PasswordThrottled
    if user.check_password(password):
        clear_login_failures(user.email, ip)
        return True
    record_login_failure(user.email, ip)
    return False
