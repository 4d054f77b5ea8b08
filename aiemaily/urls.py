"""URL map: UI pages, Django admin, REST API under /api/v1/, schema and docs under /api/."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from aiemaily import views
from aiemaily.api.idempotency import idempotent_urls
from aiemaily.security.csp_report import csp_report
from aiemaily.security.imageproxy import image_proxy

api_v1 = [
    path("", include("accounts.api.urls")),
    path("", include("secrets_vault.api.urls")),
    path("", include("mail.api.urls")),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("healthz", views.healthz, name="healthz"),
    path("csp-report", csp_report, name="csp-report"),
    path("image-proxy", image_proxy, name="image-proxy"),
    path("accounts/", include("accounts.urls")),
    path("settings/", include("secrets_vault.urls")),
    path("connections/", include("mail.urls")),
    path("connections/", include("mail.ui_urls")),
    path("mail/", include("mail.mailbox_urls")),
    path("admin/", admin.site.urls),
    # Every view under /api/v1/ gets the Idempotency-Key mechanism (aiemaily/api/idempotency.py).
    path("api/v1/", include(idempotent_urls(api_v1))),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
]

handler404 = "aiemaily.views.not_found"
handler500 = "aiemaily.views.server_error"
