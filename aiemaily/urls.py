"""URL map: UI pages, Django admin, REST API under /api/v1/, schema and docs under /api/."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from aiemaily import public, views
from aiemaily.api.errors import api_not_found
from aiemaily.api.idempotency import idempotent_urls
from aiemaily.ops import views as ops_views
from aiemaily.security.csp_report import csp_report
from aiemaily.security.imageproxy import image_proxy
from aiemaily.webhooks import views as webhook_views
from aiemaily.webhooks.stripe import stripe_webhook
from billing import public as billing_public
from mail.web import urls as mail_urls
from mail.webhooks.gmail import gmail_webhook
from mail.webhooks.graph import graph_webhook

api_v1 = [
    path("", include("accounts.api.urls")),
    path("", include("secrets_vault.api.urls")),
    path("", include("mail.api.urls")),
    path("", include("billing.api.urls")),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("features", public.features, name="features"),
    path("pricing", billing_public.pricing, name="pricing"),
    path("faq", public.faq, name="faq"),
    path("security", public.security, name="security"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("healthz", ops_views.healthz, name="healthz"),
    path("readyz", ops_views.readyz, name="readyz"),
    path("metrics", ops_views.metrics, name="metrics"),
    path("csp-report", csp_report, name="csp-report"),
    path("image-proxy", image_proxy, name="image-proxy"),
    # Inbound webhooks: POST only, CSRF-exempt per view, no CORS (aiemaily/webhooks/http.py).
    path("webhooks/stripe", stripe_webhook, name="webhook-stripe"),
    path("webhooks/gmail", gmail_webhook, name="webhook-gmail"),
    path("webhooks/graph", graph_webhook, name="webhook-graph"),
    path("settings/webhooks/", webhook_views.activity_page, name="webhook-activity"),
    path("accounts/", include("accounts.urls")),
    path("settings/", views.settings_index, name="settings"),
    path("settings/", include("secrets_vault.urls")),
    path("connections/", include(mail_urls.oauth_urls)),
    path("connections/", include(mail_urls.connection_urls)),
    path("mail/", include(mail_urls.mailbox_urls)),
    path("billing/", include("billing.urls")),
    # Every view under /api/v1/ gets the Idempotency-Key mechanism (aiemaily/api/idempotency.py).
    path("api/v1/", include(idempotent_urls(api_v1))),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    # Last: anything else under /api/ (a malformed id too) is the JSON 404, with DEBUG on as well.
    re_path(r"^api/", api_not_found),
]

if settings.AIEMAILY_PROCESS == "test":
    # The pytest process plays every role; in production only the `admin` process serves /admin/
    # (aiemaily/admin_urls.py), so the public web process never holds the maintenance role.
    urlpatterns.insert(0, path("admin/", admin.site.urls))

handler404 = "aiemaily.views.not_found"
handler500 = "aiemaily.views.server_error"
