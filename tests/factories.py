"""factory_boy factories for the suite's data."""

import uuid

import factory

from accounts.models import User

DEFAULT_PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User

    email = factory.LazyFunction(lambda: f"person-{uuid.uuid4().hex[:12]}@example.test")

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
    from secrets_vault.services import secret_store_sealed, secret_submit

    with owner_scope(owner):
        secret = secret_submit(owner=owner, purpose=purpose, value=SecretStr(value))
    with owner_scope(owner):
        return secret_store_sealed(owner_id=owner.pk, secret_id=secret.pk)
