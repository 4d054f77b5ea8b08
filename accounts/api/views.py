"""Account API: token issue/refresh and the signed-in account."""

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, permissions, serializers, status
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle, ScopedRateThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt import views as jwt_views

from accounts.services import account_delete


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

    class AccountDeleteInput(serializers.Serializer):
        password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)

    @extend_schema(responses=AccountOutput)
    def get(self, request):
        return Response(self.AccountOutput(request.user).data)

    @extend_schema(request=AccountDeleteInput, responses={202: None})
    def delete(self, request):
        """Close the account: sign-in stops now; keys are destroyed, then all data, in the background."""
        data = self.AccountDeleteInput(data=request.data)
        data.is_valid(raise_exception=True)
        if not request.user.check_password(data.validated_data["password"]):
            raise exceptions.PermissionDenied("The password is not correct.")
        account_delete(user=request.user)
        return Response({"status": "deleting"}, status=status.HTTP_202_ACCEPTED)
