"""UI routes of the billing app, mounted under /billing/ (checkout and portal are fixed by the contract)."""

from django.urls import path

from billing import views

app_name = "billing"

urlpatterns = [
    path("", views.billing_page, name="index"),
    path("checkout", views.checkout, name="checkout"),
    path("portal", views.portal, name="portal"),
    path("success", views.success, name="success"),
    path("cancelled", views.cancelled, name="cancelled"),
    path("status", views.status, name="status"),
]
