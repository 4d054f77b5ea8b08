"""JWT authentication that binds the verified user as the transaction's owner for RLS."""

from django.db import connection
from rest_framework_simplejwt.authentication import JWTAuthentication

from aiemaily.ownership.binding import bind_owner


class OwnerBoundJWTAuthentication(JWTAuthentication):
    www_authenticate_realm = "api"

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None and connection.vendor == "postgresql" and connection.in_atomic_block:
            bind_owner(result[0])
        return result
