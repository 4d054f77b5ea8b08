from django.urls import path

from mail.api import views

urlpatterns = [
    path("connections", views.ConnectionListApi.as_view(), name="api-connections"),
    path("connections/<uuid:connection_id>", views.ConnectionDetailApi.as_view(), name="api-connection-detail"),
]
