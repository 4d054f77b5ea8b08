from django.urls import path

from secrets_vault import views

app_name = "vault"

urlpatterns = [
    path("audit/", views.audit_page, name="audit"),
]
