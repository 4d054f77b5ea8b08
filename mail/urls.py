"""UI routes of the mail app, mounted under /connections/."""

from django.urls import re_path

from mail import oauth

app_name = "mail"

urlpatterns = [
    # Registered with Google and Microsoft as redirect URIs: the path must never change.
    re_path(r"^oauth/(?P<provider>gmail|microsoft)/callback$", oauth.oauth_callback, name="oauth-callback"),
]
