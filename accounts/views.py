"""Server-rendered account pages: sign-up, login (with the second factor), logout, password change
and reset, e-mail verification, the security settings page (two-factor enrolment), and the active
sessions and API tokens page (sign out or revoke any of them)."""

import django_otp
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import Http404
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse_lazy
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from accounts import second_factor, selectors, services
from accounts.browser_sessions import SESSION_ROW_KEY
from accounts.forms import AccountDeleteForm, PasswordConfirmForm, SignupForm, ThrottledLoginForm, TotpConfirmForm
from accounts.models import User
from accounts.services import account_delete, password_changed
from accounts.verification import verification_confirm, verification_send


@sensitive_post_parameters("password1", "password2")
def signup(request):
    if request.user.is_authenticated:
        return redirect("dashboard")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = User.objects.create_user(form.cleaned_data["email"], form.cleaned_data["password1"])
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        verification_send(user=user)
        messages.success(request, "Welcome to Aiemaily. We sent you a link to confirm your e-mail address.")
        return redirect("dashboard")
    return render(request, "accounts/signup.html", {"form": form}, status=400 if form.errors else 200)


class LoginView(auth_views.LoginView):
    form_class = ThrottledLoginForm
    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def form_valid(self, form):
        response = super().form_valid(form)
        if form.otp_device is not None:
            # Marks the session as verified by a second factor (request.user.is_verified()).
            django_otp.login(self.request, form.otp_device)
        return response


class LogoutView(auth_views.LogoutView):
    pass


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "accounts/password_change.html"
    success_url = reverse_lazy("accounts:password_change_done")

    def form_valid(self, form):
        response = super().form_valid(form)  # keeps this session (update_session_auth_hash)
        password_changed(user=form.user, keep_session_id=self.request.session.get(SESSION_ROW_KEY))
        return response


class PasswordChangeDoneView(auth_views.PasswordChangeDoneView):
    template_name = "accounts/password_change_done.html"


class PasswordResetView(auth_views.PasswordResetView):
    template_name = "accounts/password_reset.html"
    email_template_name = "accounts/password_reset_email.txt"
    subject_template_name = "accounts/password_reset_subject.txt"
    success_url = reverse_lazy("accounts:password_reset_done")


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "accounts/password_reset_done.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "accounts/password_reset_confirm.html"
    success_url = reverse_lazy("accounts:login")

    def form_valid(self, form):
        response = super().form_valid(form)
        password_changed(user=form.user)
        messages.success(self.request, "Your password is changed; every other session was signed out.")
        return response


@login_required
def security(request):
    """Security settings: address verification, two-factor sign-in, password."""
    pending = second_factor.pending_device(request.user)
    context = {
        "enabled": second_factor.required(request.user),
        "pending": second_factor.provisioning(pending) if pending else None,
        "confirm_form": TotpConfirmForm(),
        "disable_form": PasswordConfirmForm(),
    }
    return render(request, "accounts/security.html", context)


@login_required
@require_POST
def totp_start(request):
    if second_factor.required(request.user):
        messages.info(request, "Two-factor sign-in is already on.")
    else:
        second_factor.enrol_start(user=request.user)
    return redirect("accounts:security")


@login_required
@require_POST
def totp_confirm(request):
    form = TotpConfirmForm(request.POST)
    if form.is_valid() and second_factor.enrol_confirm(user=request.user, code=form.cleaned_data["code"]):
        messages.success(request, "Two-factor sign-in is on. Sign-in will ask for a code from the app.")
    else:
        messages.error(request, "That code did not match. Check the time on your phone and try again.")
    return redirect("accounts:security")


@login_required
@require_POST
@sensitive_post_parameters("password")
def totp_disable(request):
    form = PasswordConfirmForm(request.POST, user=request.user, request=request)
    if form.is_valid():
        second_factor.disable(user=request.user)
        messages.success(request, "Two-factor sign-in is off.")
    else:
        messages.error(request, " ".join(form.errors.get("password", ["The password is not correct."])))
    return redirect("accounts:security")


@login_required
def verify_email(request, token):
    """GET shows a confirm button (link scanners only GET); POST confirms, as the signed-in account."""
    if request.method == "POST":
        if verification_confirm(user=request.user, token=token):
            messages.success(request, "Your e-mail address is confirmed.")
            return redirect("accounts:security")
        return render(request, "accounts/verify_email.html", {"invalid": True}, status=400)
    return render(request, "accounts/verify_email.html", {"invalid": False})


@login_required
@require_POST
def verify_email_send(request):
    # One mail per account per minute: the button cannot be used to flood an inbox.
    if request.user.email_verified_at is None and cache.add(f"verify-mail:{request.user.pk}", 1, timeout=60):
        verification_send(user=request.user)
    messages.info(request, "If your address is not confirmed yet, a new link is on its way.")
    return redirect("accounts:security")


@login_required
@sensitive_post_parameters("password")
def delete_account(request):
    form = AccountDeleteForm(request.POST or None, user=request.user, request=request)
    if request.method == "POST" and form.is_valid():
        account_delete(user=request.user)
        logout(request)
        messages.success(request, "Your account is closed. Its keys and data are being destroyed.")
        return redirect("home")
    return render(request, "accounts/delete.html", {"form": form}, status=400 if form.errors else 200)


@login_required
def sessions(request):
    """Where the account is signed in: browser sessions (this one marked) and API refresh tokens."""
    current = request.session.get(SESSION_ROW_KEY)
    rows = selectors.browser_session_list(owner=request.user)
    return render(request, "accounts/sessions.html", {
        "browser_sessions": [(row, str(row.pk) == current) for row in rows],
        "tokens": selectors.refresh_token_list(owner=request.user),
        "others": sum(1 for row in rows if str(row.pk) != current),
        "access_minutes": int(settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"].total_seconds() // 60),
    })


@login_required
@require_POST
def session_end(request, session_id):
    """End one browser session. Another user's session is 404; ending an ended one changes nothing."""
    if selectors.browser_session_get(owner=request.user, session_id=session_id) is None:
        raise Http404("no such session")
    ended = services.browser_session_end(owner=request.user, session_id=session_id)
    if str(session_id) == request.session.get(SESSION_ROW_KEY):
        logout(request)
        return redirect("accounts:login")
    messages.success(request, "That session is signed out." if ended else "That session was already signed out.")
    return redirect("accounts:sessions")


@login_required
@require_POST
def token_revoke(request, token_id):
    """Revoke one API refresh token. Another user's token is 404; revoking twice changes nothing."""
    if selectors.refresh_token_get(owner=request.user, record_id=token_id) is None:
        raise Http404("no such token")
    revoked = services.refresh_token_revoke(owner=request.user, record_id=token_id)
    messages.success(request, "That API token is revoked: the app using it must sign in again." if revoked
                     else "That API token no longer worked.")
    return redirect("accounts:sessions")


@login_required
@require_POST
def sign_out_others(request):
    ended, revoked = services.sign_out_everywhere_else(
        owner=request.user, keep_session_id=request.session.get(SESSION_ROW_KEY))
    messages.success(request, f"Signed out everywhere else: {ended} other session{pluralize(ended)} ended, "
                              f"{revoked} API token{pluralize(revoked)} revoked.")
    return redirect("accounts:sessions")
