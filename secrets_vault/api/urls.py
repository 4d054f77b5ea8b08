from django.urls import path

from secrets_vault.api import views

urlpatterns = [
    path("audit", views.AuditListApi.as_view(), name="api-audit"),
    path("audit/<uuid:event_id>", views.AuditDetailApi.as_view(), name="api-audit-detail"),
    path("ai-keys", views.AiKeyListApi.as_view(), name="api-ai-keys"),
    path("ai-keys/<uuid:key_id>", views.AiKeyDetailApi.as_view(), name="api-ai-key-detail"),
]
