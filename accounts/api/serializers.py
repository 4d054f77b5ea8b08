"""JWT serializers: e-mail login with throttling (and the second factor when the account has one);
refresh rotation with reuse detection on the hashed ledger (accounts/refresh_tokens.py).

Reuse detection: a refresh token is single-use (rotated on use). If a used token comes back, either
the user or a thief holds a copy, and we cannot tell which: every outstanding refresh token of that
user is revoked, so both must sign in again.
"""

import logging
from uuid import UUID

from django.db import transaction
from rest_framework import exceptions, serializers
from rest_framework_simplejwt.exceptions import InvalidToken, TokenBackendError
from rest_framework_simplejwt.serializers import PasswordField, TokenObtainPairSerializer
from rest_framework_simplejwt.serializers import TokenRefreshSerializer as BaseRefreshSerializer
from rest_framework_simplejwt.state import token_backend
from rest_framework_simplejwt.tokens import RefreshToken

from accounts import second_factor
from accounts.models import User
from accounts.refresh_tokens import RefreshReuse, refresh_consume, refresh_record, refresh_revoke_all
from accounts.throttle import clear_login_failures, login_blocked, record_login_failure
from aiemaily.ownership.binding import owner_scope
from aiemaily.security.client_ip import client_ip

security_log = logging.getLogger("aiemaily.security")


def _record(refresh: str) -> None:
    payload = token_backend.decode(refresh, verify=True)
    with owner_scope(payload["sub"]):
        refresh_record(owner_id=payload["sub"], token=refresh, expires_at=payload["exp"])


class TokenObtainSerializer(TokenObtainPairSerializer):
    username_field = User.USERNAME_FIELD

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A password is taken as typed, as the sign-in page takes it (strip=False): simplejwt's field
        # would strip it, so a password that begins or ends with a space could never sign in here.
        self.fields["password"] = PasswordField(trim_whitespace=False)
        # Required only for accounts with a second factor; a six- to eight-digit TOTP code.
        self.fields["otp"] = serializers.RegexField(r"^\d{6,8}$", required=False, write_only=True)

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
        if second_factor.required(self.user):
            code = attrs.get("otp")
            if not code:
                raise exceptions.AuthenticationFailed(
                    "This account uses a second factor: send the code from the authenticator app as `otp`.",
                    code="otp_required")
            if second_factor.verify(self.user, code) is None:
                record_login_failure(email, ip)
                raise exceptions.AuthenticationFailed("The authenticator code is not correct.", code="otp_invalid")
        clear_login_failures(email, ip)
        _record(data["refresh"])
        return data


def revoke_all_refresh_tokens(user_id) -> int:
    with owner_scope(user_id):
        return refresh_revoke_all(owner_id=user_id)


class TokenRefreshSerializer(BaseRefreshSerializer):
    refresh = serializers.CharField(max_length=4096)

    def validate(self, attrs):
        try:
            payload = token_backend.decode(attrs["refresh"], verify=True)
        except TokenBackendError:
            raise InvalidToken("Token is invalid or expired.") from None
        if payload.get("token_type") != "refresh" or "jti" not in payload or "sub" not in payload:
            raise InvalidToken("Token is not a refresh token.")
        try:
            owner_id = str(UUID(str(payload["sub"])))
        except ValueError:
            raise InvalidToken("Token is invalid or expired.") from None
        try:
            with transaction.atomic(), owner_scope(owner_id):
                if not refresh_consume(owner_id=owner_id, token=attrs["refresh"]):
                    raise InvalidToken("Token is invalid or expired.")
                data = super().validate(attrs)
                new = RefreshToken(data["refresh"], verify=False) if "refresh" in data else None
                if new is not None:
                    refresh_record(owner_id=owner_id, token=data["refresh"], expires_at=new["exp"])
                return data
        except RefreshReuse:
            pass
        count = revoke_all_refresh_tokens(owner_id)
        security_log.warning(
            "refresh token reuse detected; revoked %d refresh tokens", count,
            extra={"event": "refresh_token_reuse", "owner_id": owner_id},
        )
        raise InvalidToken("Refresh token was already used; every session of this account was signed out.")
