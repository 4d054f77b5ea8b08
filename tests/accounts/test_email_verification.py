"""E-mail addresses are verified with a signed link, opened by the account itself, before anyone can
share a thread with that account."""

import re

import pytest
from django.core import signing
from django.test import Client

from accounts.verification import SALT, verification_token
from tests.harness.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.claim("owner-scoping")]


def _signup(client, email):
    response = client.post("/accounts/signup/", {"email": email, "password1": "a long passphrase 77",
                                                 "password2": "a long passphrase 77"})
    assert response.status_code == 302
    from accounts.models import User

    return User.objects.get(email=email)


def _link(mailoutbox):
    return re.search(r"https?://[^/\s]+(/accounts/verify/\S+/)", mailoutbox[-1].body).group(1)


def test_sign_up_mails_a_link_that_verifies_only_on_post_by_the_account(mailoutbox, unique_email):
    browser = Client()
    user = _signup(browser, unique_email)
    assert user.email_verified_at is None
    assert mailoutbox[-1].to == [unique_email]
    link = _link(mailoutbox)
    assert browser.get(link).status_code == 200  # a link scanner's GET changes nothing
    user.refresh_from_db()
    assert user.email_verified_at is None
    assert browser.post(link).status_code == 302
    user.refresh_from_db()
    assert user.email_verified_at is not None


def test_the_link_does_nothing_for_another_signed_in_account(mailoutbox, unique_email):
    # Someone signs up with another person's address; the person's mail scanner or the person
    # themselves opens the link while signed in to *their own* account: the squatter stays unverified.
    squatter = _signup(Client(), unique_email)
    link = _link(mailoutbox)
    someone_else = Client()
    someone_else.force_login(UserFactory(email_verified_at=None))
    assert someone_else.post(link).status_code == 400
    anonymous = Client().post(link)
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    squatter.refresh_from_db()
    assert squatter.email_verified_at is None


def test_a_forged_expired_or_stale_link_is_refused(unique_email, settings):
    user = UserFactory(email=unique_email, email_verified_at=None)
    browser = Client()
    browser.force_login(user)
    forged = signing.TimestampSigner(key="x" * 50, salt=SALT).sign_object({"u": str(user.pk), "e": user.email})
    assert browser.post(f"/accounts/verify/{forged}/").status_code == 400
    token = verification_token(user)
    user.email = "changed-" + unique_email
    user.save(update_fields=["email"])
    assert browser.post(f"/accounts/verify/{token}/").status_code == 400  # sent to the old address
    settings.AIEMAILY_EMAIL_VERIFY_SECONDS = -1
    assert browser.post(f"/accounts/verify/{verification_token(user)}/").status_code == 400
    user.refresh_from_db()
    assert user.email_verified_at is None


def test_resending_is_limited_and_only_for_unverified_addresses(mailoutbox):
    user = UserFactory(email_verified_at=None)
    browser = Client()
    browser.force_login(user)
    for _ in range(3):
        assert browser.post("/accounts/verify/send/").status_code == 302
    assert len(mailoutbox) == 1
    verified = Client()
    verified.force_login(UserFactory())
    verified.post("/accounts/verify/send/")
    assert len(mailoutbox) == 1
