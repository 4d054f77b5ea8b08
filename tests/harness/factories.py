"""factory_boy factories for the suite's data."""

import uuid

import factory
from django.utils import timezone

from accounts.models import User

DEFAULT_PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User

    email = factory.LazyFunction(lambda: f"person-{uuid.uuid4().hex[:12]}@example.test")
    # The suite's people confirmed their address; pass email_verified_at=None for one who has not.
    email_verified_at = factory.LazyFunction(timezone.now)

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        password = kwargs.pop("password", DEFAULT_PASSWORD)
        return model_class.objects.create_user(*args, password=password, **kwargs)


def audit_event(owner, **fields):
    """An audit event for `owner`, written in a transaction bound to that owner (as a worker would)."""
    from aiemaily.ownership.binding import owner_scope
    from secrets_vault.services import audit_record

    fields.setdefault("action", "decrypt")
    fields.setdefault("process", "vault")
    fields.setdefault("purpose", "imap_password")
    with owner_scope(owner):
        return audit_record(owner_id=owner.pk, **fields)


def stored_secret(owner, value: str = "imap-password-value", purpose: str = "imap_password"):
    """A secret submitted as web does and stored as worker-vault does (both run in this process)."""
    from aiemaily.ownership.binding import owner_scope
    from secrets_vault.crypto import SecretStr
    from secrets_vault.services import secret_submit
    from secrets_vault.vault_services import secret_store_sealed

    with owner_scope(owner):
        secret = secret_submit(owner=owner, purpose=purpose, value=SecretStr(value))
    with owner_scope(owner):
        return secret_store_sealed(owner_id=owner.pk, secret_id=secret.pk)


def totp_device(user):
    """A confirmed TOTP authenticator for `user` (django-otp)."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    return TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=True)


def totp_code(device, offset: int = 0) -> str:
    """The code `device` shows now (offset in 30-second steps), as an authenticator app computes it."""
    from django_otp.oath import totp

    return f"{totp(device.bin_key, device.step, device.t0, device.digits, offset):0{device.digits}d}"


def staff_admin_client(staff, client=None):
    """A client signed in to the staff admin the only way there is: password and a TOTP code."""
    from django.test import Client

    client = client or Client()
    device = totp_device(staff)
    response = client.post("/admin/login/", {
        "username": staff.email, "password": DEFAULT_PASSWORD,
        "otp_device": device.persistent_id, "otp_token": totp_code(device), "next": "/admin/"})
    assert response.status_code == 302, response.content.decode()[:2000]
    return client
