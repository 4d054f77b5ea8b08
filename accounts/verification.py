"""E-mail address verification: a signed, expiring link that counts only when opened by the account.

The link carries the account id and the address it was sent to, signed with SECRET_KEY (Django's
TimestampSigner) and valid for AIEMAILY_EMAIL_VERIFY_SECONDS. It is confirmed with a POST while
signed in as that account: a mail scanner that fetches links, or someone who signed up with your
address and forwards the link, cannot verify it for an account that is not yours. Only verified
addresses can be found by sharing (delegation_grant in mail/services.py).
"""

from django.conf import settings
from django.core import signing
from django.core.mail import send_mail
from django.urls import reverse
from django.utils import timezone

from accounts.models import User

SALT = "accounts.email-verification"


def verification_token(user: User) -> str:
    return signing.TimestampSigner(salt=SALT).sign_object({"u": str(user.pk), "e": user.email.lower()})


def verification_send(*, user: User) -> None:
    link = settings.SITE_URL + reverse("accounts:verify_email", args=[verification_token(user)])
    send_mail(
        "Confirm your e-mail address for Aiemaily",
        "Open this link while signed in to Aiemaily to confirm this address:\n\n"
        f"{link}\n\nIt expires in {settings.AIEMAILY_EMAIL_VERIFY_SECONDS // 3600} hours. "
        "If you did not create an Aiemaily account, ignore this message.",
        None, [user.email],
    )


def verification_confirm(*, user: User, token: str) -> bool:
    """Mark the user's address verified if the token was issued for this user and this address."""
    try:
        data = signing.TimestampSigner(salt=SALT).unsign_object(
            token, max_age=settings.AIEMAILY_EMAIL_VERIFY_SECONDS)
    except signing.BadSignature:  # SignatureExpired is a BadSignature
        return False
    if not isinstance(data, dict) or data.get("u") != str(user.pk) or data.get("e") != user.email.lower():
        return False
    if user.email_verified_at is None:
        user.email_verified_at = timezone.now()
        user.save(update_fields=["email_verified_at"])
    return True
