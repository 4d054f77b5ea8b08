from django.urls import path

from billing.api import views

urlpatterns = [
    path("billing", views.BillingGetApi.as_view(), name="api-billing"),
]
