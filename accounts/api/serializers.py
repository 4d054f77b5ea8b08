"""JWT serializers: e-mail login with throttling; refresh rotation with reuse detection.

Reuse detection: a refresh token is single-use (rotated and blacklisted on use). If a blacklisted
token comes back, either the user or a thief holds a copy, and we cannot tell which: every
outstanding refresh token of that user is revoked, so both must sign in again.
"""

import logging

from django.db import transaction
from rest_framework import exceptions, serializers
from rest_framework_simplejwt.exceptions import InvalidToken, TokenBackendError
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer
from rest_framework_simplejwt.serializers import TokenRefreshSerializer as BaseRefreshSerializer
from rest_framework_simplejwt.state import token_backend
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from accounts.models import User
from accounts.throttle import clear_login_failures, client_ip, login_blocked, record_login_failure

security_log = logging.getLogger("aiemaily.security")


class TokenObtainSerializer(TokenObtainPairSerializer):
    username_field = User.USERNAME_FIELD

    def validate(self, attrs):
        request = self.context.get("request")
        email = str(attrs.get(self.username_field, ""))
        ip = client_ip(request) if request else ""
        if login_blocked(email, ip):
            raise exceptions.Throttled(detail="Too many failed sign-in attempts. Try again later.")
        try:
            data = super().validate(attrs)
        except exceptions.AuthenticationFailed:
            record_login_failure(email, ip)
            raise
        clear_login_failures(email)
        return data


def revoke_all_refresh_tokens(user_id) -> int:
    revoked = 0
    for token in OutstandingToken.objects.filter(user_id=user_id, blacklistedtoken__isnull=True):
        BlacklistedToken.objects.get_or_create(token=token)
        revoked += 1
    return revoked


class TokenRefreshSerializer(BaseRefreshSerializer):
    refresh = serializers.CharField(max_length=4096)

    def validate(self, attrs):
        try:
            payload = token_backend.decode(attrs["refresh"], verify=True)
        except TokenBackendError:
            raise InvalidToken("Token is invalid or expired.") from None
        if payload.get("token_type") != "refresh" or "jti" not in payload:
            raise InvalidToken("Token is not a refresh token.")
        reused_by = None
        with transaction.atomic():
            # The row lock serialises concurrent refreshes of one token: exactly one of them wins.
            outstanding = OutstandingToken.objects.select_for_update().filter(jti=payload["jti"]).first()
            if outstanding is None:
                raise InvalidToken("Token is invalid or expired.")
            if BlacklistedToken.objects.filter(token=outstanding).exists():
                reused_by = outstanding.user_id
            else:
                return super().validate(attrs)
        count = revoke_all_refresh_tokens(reused_by)
        security_log.warning(
            "refresh token reuse detected; revoked %d refresh tokens", count,
            extra={"event": "refresh_token_reuse", "owner_id": reused_by},
        )
        raise InvalidToken("Refresh token was already used; every session of this account was signed out.")
