"""Account API: token issue/refresh, the signed-in account, and where it is signed in (sessions)."""

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, permissions, serializers, status
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle, ScopedRateThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt import views as jwt_views

from accounts import selectors, services
from accounts.services import account_delete
from accounts.throttle import PasswordThrottled, password_check_throttled
from aiemaily.api.schema import error
from aiemaily.security.client_ip import client_ip


class TokenObtainApi(jwt_views.TokenObtainPairView):
    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []
    throttle_classes = [AnonRateThrottle, ScopedRateThrottle]
    throttle_scope = "auth"


class TokenRefreshApi(jwt_views.TokenRefreshView):
    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []
    throttle_classes = [AnonRateThrottle, ScopedRateThrottle]
    throttle_scope = "auth"


class AccountApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    class AccountOutput(serializers.Serializer):
        id = serializers.UUIDField()
        email = serializers.EmailField()
        display_name = serializers.CharField()
        date_joined = serializers.DateTimeField()

    class AccountDeleted(serializers.Serializer):
        status = serializers.ChoiceField(choices=["deleting"])

    class AccountDeleteInput(serializers.Serializer):
        password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)

    @extend_schema(responses=AccountOutput)
    def get(self, request):
        return Response(self.AccountOutput(request.user).data)

    @extend_schema(request=AccountDeleteInput,
                   responses={202: AccountDeleted, 403: error("The password is not correct (`permission_denied`).")})
    def delete(self, request):
        """Close the account: sign-in stops now; keys are destroyed, then all data, in the background."""
        data = self.AccountDeleteInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            correct = password_check_throttled(request.user, data.validated_data["password"], client_ip(request))
        except PasswordThrottled:
            raise exceptions.Throttled(detail="Too many failed password attempts. Try again later.") from None
        if not correct:
            raise exceptions.PermissionDenied("The password is not correct.")
        account_delete(user=request.user)
        return Response({"status": "deleting"}, status=status.HTTP_202_ACCEPTED)


class SessionOutput(serializers.Serializer):
    id = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=["browser", "api"], help_text="A signed-in browser, or an API "
                                   "client's current refresh token.")
    created_at = serializers.DateTimeField(help_text="Signed in (browser); issued or last renewed (api).")
    last_seen_at = serializers.DateTimeField(allow_null=True, help_text="Browser only, to the minute.")
    expires_at = serializers.DateTimeField(allow_null=True, help_text="API tokens only.")
    browser = serializers.CharField(help_text="A summary such as 'Firefox on Linux'; empty for API tokens.")
    network = serializers.CharField(help_text="The client's network (IPv4 /24, IPv6 /48), never its address.")


def _session_rows(user) -> list[dict]:
    browsers = [{"id": row.pk, "kind": "browser", "created_at": row.created_at, "last_seen_at": row.last_seen_at,
                 "expires_at": None, "browser": row.user_agent, "network": row.ip_prefix}
                for row in selectors.browser_session_list(owner=user)]
    tokens = [{"id": row.pk, "kind": "api", "created_at": row.created_at, "last_seen_at": None,
               "expires_at": row.expires_at, "browser": "", "network": ""}
              for row in selectors.refresh_token_list(owner=user)]
    return browsers + tokens


class SessionListApi(APIView):
    """Where the account is signed in: live browser sessions and API refresh tokens."""

    permission_classes = [permissions.IsAuthenticated]

    class SessionList(serializers.Serializer):
        results = SessionOutput(many=True)

    @extend_schema(responses=SessionList)
    def get(self, request):
        return Response({"results": SessionOutput(_session_rows(request.user), many=True).data})


class SessionDetailApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses={204: None})
    def delete(self, request, session_id):
        """Sign a browser out (on its next request) or revoke an API refresh token (its access tokens
        expire on their own within minutes). Ending one already ended changes nothing (204); another
        user's id is 404."""
        if selectors.browser_session_get(owner=request.user, session_id=session_id) is not None:
            services.browser_session_end(owner=request.user, session_id=session_id)
        elif selectors.refresh_token_get(owner=request.user, record_id=session_id) is not None:
            services.refresh_token_revoke(owner=request.user, record_id=session_id)
        else:
            raise exceptions.NotFound()
        return Response(status=status.HTTP_204_NO_CONTENT)
