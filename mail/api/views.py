"""Connections API: list, create (IMAP, or start an OAuth flow), read, disconnect."""

from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from aiemaily.api.pagination import CreatedCursorPagination
from aiemaily.api.query import StrictBooleanField, query_params
from aiemaily.api.schema import error
from mail import services
from mail.api.serializers import ConnectionInput, ConnectionOutput
from mail.selectors import connection_get, connection_list
from mail.web.oauth import oauth_start


class ConnectionPagination(CreatedCursorPagination):
    ordering = ("created_at", "id")


@method_decorator(sensitive_post_parameters(), name="dispatch")
class ConnectionListApi(ListAPIView):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = ConnectionOutput
    pagination_class = ConnectionPagination

    def get_queryset(self):
        return connection_list(owner=self.request.user)

    @extend_schema(request=ConnectionInput, responses={201: ConnectionOutput, 422: error(
        "Gmail or Microsoft is not configured on this server (`provider_not_configured`): do not retry; or the "
        "Idempotency-Key was used for a different request (`idempotency_key_reused`).")})
    def post(self, request):
        data = ConnectionInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if values["provider"] == "imap":
            connection = services.connection_create_imap(owner=request.user, email=values["email"],
                                                         imap=values["imap"], smtp=values["smtp"])
            body = ConnectionOutput(connection).data
        else:
            connection, authorize_url = oauth_start(
                owner=request.user, provider=values["provider"], capabilities=values.get("capabilities"),
                redirect_uri=request.build_absolute_uri(f"/connections/oauth/{values['provider']}/callback"))
            body = dict(ConnectionOutput(connection).data, authorize_url=authorize_url)
        return Response(body, status=status.HTTP_201_CREATED)


class ConnectionDeleteQuery(serializers.Serializer):
    keep_mail = StrictBooleanField(required=False, default=True, help_text="keep the synced mail (default true)")


class ConnectionDetailApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses=ConnectionOutput)
    def get(self, request, connection_id):
        return Response(ConnectionOutput(connection_get(owner=request.user, connection_id=connection_id)).data)

    @extend_schema(parameters=[ConnectionDeleteQuery], responses={204: None})
    def delete(self, request, connection_id):
        connection = connection_get(owner=request.user, connection_id=connection_id)
        keep_mail = query_params(ConnectionDeleteQuery, request)["keep_mail"]
        services.connection_disconnect(owner=request.user, connection=connection, keep_mail=keep_mail)
        return Response(status=status.HTTP_204_NO_CONTENT)
