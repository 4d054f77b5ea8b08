from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("password/", views.PasswordChangeView.as_view(), name="password_change"),
    path("password/done/", views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("password/reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path("password/reset/sent/", views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path("password/reset/<uidb64>/<token>/", views.PasswordResetConfirmView.as_view(),
         name="password_reset_confirm"),
    path("security/", views.security, name="security"),
    path("security/totp/start/", views.totp_start, name="totp_start"),
    path("security/totp/confirm/", views.totp_confirm, name="totp_confirm"),
    path("security/totp/disable/", views.totp_disable, name="totp_disable"),
    path("verify/send/", views.verify_email_send, name="verify_email_send"),
    path("verify/<str:token>/", views.verify_email, name="verify_email"),
    path("delete/", views.delete_account, name="delete"),
    path("sessions/", views.sessions, name="sessions"),
    path("sessions/<uuid:session_id>/end/", views.session_end, name="session_end"),
    path("sessions/others/end/", views.sign_out_others, name="sign_out_others"),
    path("sessions/tokens/<uuid:token_id>/revoke/", views.token_revoke, name="token_revoke"),
]
