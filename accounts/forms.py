"""Sign-up and login forms (bounded, typed input; passwords validated by Django's validators)."""

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm

from accounts import second_factor
from accounts.models import User
from accounts.throttle import (
    PasswordThrottled,
    clear_login_failures,
    login_blocked,
    password_check_throttled,
    record_login_failure,
)
from aiemaily.security.client_ip import client_ip


class SignupForm(forms.Form):
    email = forms.EmailField(max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"}))
    password1 = forms.CharField(
        label="Password", strip=False, max_length=128,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="At least 10 characters; not a common password.",
    )
    password2 = forms.CharField(
        label="Password again", strip=False, max_length=128,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean_email(self):
        email = self.cleaned_data["email"].lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this e-mail address already exists.")
        return email

    def clean(self):
        cleaned = super().clean()
        first, second = cleaned.get("password1"), cleaned.get("password2")
        if first and second and first != second:
            self.add_error("password2", "The two passwords differ.")
        elif first:
            try:
                password_validation.validate_password(first, User(email=cleaned.get("email", "")))
            except forms.ValidationError as error:
                self.add_error("password1", error)
        return cleaned


class ThrottledLoginForm(AuthenticationForm):
    """Password, and the authenticator code when the account has a second factor. Failures of either
    count against the sign-in throttle (per account and address, and per address)."""

    username = forms.EmailField(
        label="E-mail address", max_length=254, widget=forms.EmailInput(attrs={"autofocus": True})
    )
    otp = forms.RegexField(
        label="Authenticator code", regex=r"^\d{6,8}$", required=False, max_length=8,
        help_text="Only if you turned on two-factor sign-in.",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )
    error_messages = {
        **AuthenticationForm.error_messages,
        "throttled": "Too many failed attempts. Wait a few minutes and try again.",
        "otp_required": "This account uses two-factor sign-in: enter the code from your authenticator app.",
        "otp_invalid": "The authenticator code is not correct.",
    }

    def clean(self):
        email = self.cleaned_data.get("username") or ""
        ip = client_ip(self.request) if self.request else ""
        if login_blocked(email, ip):
            raise forms.ValidationError(self.error_messages["throttled"], code="throttled")
        self.otp_device = None
        try:
            cleaned = super().clean()
            # No user when a field was missing or invalid (the field errors say so).
            if self.user_cache is not None and second_factor.required(self.user_cache):
                code = cleaned.get("otp")
                if not code:
                    raise forms.ValidationError(self.error_messages["otp_required"], code="otp_required")
                self.otp_device = second_factor.verify(self.user_cache, code)
                if self.otp_device is None:
                    raise forms.ValidationError(self.error_messages["otp_invalid"], code="otp_invalid")
        except forms.ValidationError as error:
            if error.code != "otp_required":  # asking for the code is not a failed guess
                record_login_failure(email, ip)
            raise
        clear_login_failures(email, ip)
        return cleaned


class TotpConfirmForm(forms.Form):
    code = forms.RegexField(label="Code from the app", regex=r"^\d{6,8}$", max_length=8,
                            widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}))


class PasswordConfirmForm(forms.Form):
    """Re-enter the password for a sensitive change; checked through the sign-in throttle."""

    password = forms.CharField(label="Your password", strip=False, max_length=128,
                               widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}))

    def __init__(self, *args, user=None, request=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user, self.request = user, request

    def clean_password(self):
        password = self.cleaned_data["password"]
        try:
            correct = password_check_throttled(self.user, password, client_ip(self.request) if self.request else "")
        except PasswordThrottled:
            raise forms.ValidationError("Too many failed attempts. Wait a few minutes and try again.",
                                        code="throttled") from None
        if not correct:
            raise forms.ValidationError("The password is not correct.")
        return password


class AccountDeleteForm(PasswordConfirmForm):
    pass
