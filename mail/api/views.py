"""Connections API: list, create (IMAP, or start an OAuth flow), read, disconnect."""

from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from aiemaily.api.pagination import CreatedCursorPagination
from mail import services
from mail.api.serializers import ConnectionInput, ConnectionOutput
from mail.selectors import connection_get, connection_list


class ConnectionPagination(CreatedCursorPagination):
    ordering = ("created_at", "id")


@method_decorator(sensitive_post_parameters(), name="dispatch")
class ConnectionListApi(ListAPIView):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = ConnectionOutput
    pagination_class = ConnectionPagination

    def get_queryset(self):
        return connection_list(owner=self.request.user)

    @extend_schema(request=ConnectionInput, responses={201: ConnectionOutput})
    def post(self, request):
        data = ConnectionInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if values["provider"] == "imap":
            connection = services.connection_create_imap(owner=request.user, email=values["email"],
                                                         imap=values["imap"], smtp=values["smtp"])
            body = ConnectionOutput(connection).data
        else:
            from mail.oauth import oauth_start

            connection, authorize_url = oauth_start(
                owner=request.user, provider=values["provider"], capabilities=values.get("capabilities"),
                redirect_uri=request.build_absolute_uri(f"/connections/oauth/{values['provider']}/callback"))
            body = dict(ConnectionOutput(connection).data, authorize_url=authorize_url)
        return Response(body, status=status.HTTP_201_CREATED)


class ConnectionDetailApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses=ConnectionOutput)
    def get(self, request, connection_id):
        return Response(ConnectionOutput(connection_get(owner=request.user, connection_id=connection_id)).data)

    @extend_schema(
        parameters=[OpenApiParameter("keep_mail", bool, description="keep synced mail (default true)")],
        responses={204: None},
    )
    def delete(self, request, connection_id):
        connection = connection_get(owner=request.user, connection_id=connection_id)
        keep_mail = serializers.BooleanField().to_internal_value(request.query_params.get("keep_mail", "true"))
        services.connection_disconnect(owner=request.user, connection=connection, keep_mail=keep_mail)
        return Response(status=status.HTTP_204_NO_CONTENT)
