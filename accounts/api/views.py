"""Account API: token issue/refresh and the signed-in account."""

from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle, ScopedRateThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt import views as jwt_views


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

    class Output(serializers.Serializer):
        id = serializers.UUIDField()
        email = serializers.EmailField()
        display_name = serializers.CharField()
        date_joined = serializers.DateTimeField()

    @extend_schema(responses=Output)
    def get(self, request):
        return Response(self.Output(request.user).data)
