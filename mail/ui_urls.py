"""Connection pages (server-rendered UI). The OAuth callback lives in mail/urls.py."""

from django.urls import path

from mail import views

app_name = "connections"

urlpatterns = [
    path("", views.connection_index, name="index"),
    path("add/imap/", views.connection_add_imap, name="add_imap"),
    path("add/<str:provider>/", views.connection_start_oauth, name="start_oauth"),
    path("<uuid:connection_id>/", views.connection_detail, name="detail"),
    path("<uuid:connection_id>/status.json", views.connection_status, name="status"),
    path("<uuid:connection_id>/password/", views.connection_update_password, name="password"),
    path("<uuid:connection_id>/sync/", views.connection_sync_now, name="sync"),
    path("<uuid:connection_id>/disconnect/", views.connection_disconnect, name="disconnect"),
]
