from django.urls import path

from accounts.api import views

urlpatterns = [
    path("auth/token", views.TokenObtainApi.as_view(), name="api-token"),
    path("auth/token/refresh", views.TokenRefreshApi.as_view(), name="api-token-refresh"),
    path("account", views.AccountApi.as_view(), name="api-account"),
    path("sessions", views.SessionListApi.as_view(), name="api-sessions"),
    path("sessions/<uuid:session_id>", views.SessionDetailApi.as_view(), name="api-session-detail"),
]
