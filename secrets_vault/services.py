"""Writes of the vault app that the web zone makes. Keyword-only functions named <entity>_<verb>.

secret_submit (seal on arrival), secret_forget, ai_key_add / ai_key_delete, audit_record. Nothing
here reaches the key store or the KMS, even through another module (the `web-not-key-store` import
contract): sealing needs only the vault's public key, and the storage step is queued by name
(`secrets_vault.queue`). The writes that use the key store, which only worker-vault runs, are in
`secrets_vault.vault_services`.
"""

from django.db import transaction

from secrets_vault.crypto import SecretStr
from secrets_vault.models import AiKey, AuditEvent, Secret
from secrets_vault.queue import secret_store
from secrets_vault.sealing import seal_for_vault


def audit_record(*, owner_id, action: str, process: str, purpose: str = "", subject: str = "",
                 detail: str = "") -> AuditEvent:
    """Write one audit event. Runs inside a transaction bound to `owner_id` (RLS WITH CHECK)."""
    return AuditEvent.objects.create(
        owner_id=owner_id, action=action, process=process, purpose=purpose[:64], subject=str(subject)[:128],
        detail=detail[:255],
    )


def secret_submit(*, owner, purpose: str, value: SecretStr, hint: str = "", enqueue: bool = True) -> Secret:
    """Seal a secret to the vault and queue its storage. The web tier never sees it again.

    The sealed value waits in the row (not in the broker), so a lost broker message loses nothing:
    the vault picks pending rows up again.
    """
    secret = Secret(owner=owner, purpose=purpose, hint=hint)
    secret.sealed = seal_for_vault(value, owner_id=owner.pk, secret_id=secret.id, purpose=purpose)
    secret.save()
    audit_record(owner_id=owner.pk, action=AuditEvent.Action.STORE, process="web", purpose=purpose,
                 subject=secret.id, detail="sealed on arrival; queued for the vault")
    if enqueue:  # callers that chain their own vault task (which stores first) pass False
        owner_id, secret_id = str(owner.pk), str(secret.id)
        transaction.on_commit(lambda: secret_store.delay(owner_id, secret_id))
    return secret


def ai_key_add(*, owner, provider: str, key: SecretStr, base_url: str = "") -> AiKey:
    value = key.reveal()
    secret = secret_submit(owner=owner, purpose="ai_key", value=key, hint=value[-4:])
    return AiKey.objects.create(owner=owner, provider=provider, base_url=base_url, secret=secret)


def ai_key_delete(*, owner, ai_key: AiKey) -> None:
    secret = ai_key.secret
    ai_key.delete()
    secret_forget(owner=owner, secret=secret)


def secret_forget(*, owner, secret: Secret) -> None:
    """Delete a secret's row (ciphertext included); the DEK stays for the owner's other secrets."""
    audit_record(owner_id=owner.pk, action=AuditEvent.Action.DELETE, process="web", purpose=secret.purpose,
                 subject=secret.id)
    Secret.objects.for_owner(owner).filter(pk=secret.pk).delete()
