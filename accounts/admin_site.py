"""The staff admin: a second factor always, the sign-in throttle always, its own process.

Served only by the `admin` process (AIEMAILY_PROCESS=admin, a separate non-public bind; see the
Procfile), the one web-facing process that holds the maintenance role its read-only views need.
"""

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite

from accounts.throttle import clear_login_failures, login_blocked, record_login_failure
from aiemaily.security.client_ip import client_ip


class ThrottledOTPAdminAuthenticationForm(OTPAdminAuthenticationForm):
    """Password, then the TOTP code; every failure of either counts against the sign-in throttle
    (per account and address, and per address), exactly as on the user sign-in page."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "throttled": "Too many failed attempts. Wait a few minutes and try again.",
    }

    def clean(self):
        email = self.cleaned_data.get("username") or ""
        ip = client_ip(self.request) if self.request else ""
        if login_blocked(email, ip):
            raise ValidationError(self.error_messages["throttled"], code="throttled")
        try:
            cleaned = super().clean()
        except ValidationError:
            record_login_failure(email, ip)
            raise
        clear_login_failures(email, ip)
        return cleaned


class StaffAdminSite(OTPAdminSite):
    """Staff without a confirmed authenticator device cannot sign in at all (OTPAdminSite)."""

    login_form = ThrottledOTPAdminAuthenticationForm
    site_header = "Aiemaily staff"


def install() -> None:
    # Models register on the default site (admin.site) from each app's admin.py; giving that one
    # instance our class keeps every registration and makes the rules above apply to all of them.
    admin.site.__class__ = StaffAdminSite
    admin.site.login_form = ThrottledOTPAdminAuthenticationForm
