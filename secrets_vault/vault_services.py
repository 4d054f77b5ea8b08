"""Writes of the vault app that use the key store: worker-vault only. Keyword-only functions named <entity>_<verb>.

secret_store_sealed, secret_lease, secret_reencrypt_owner, owner_shred, and the secrets the vault
obtains or uses itself (OAuth codes and refresh tokens). Imported by `secrets_vault.tasks`, the OAuth
grants and the vault's management commands only; the key store refuses to run anywhere but
worker-vault (VaultNotHere). The web zone's writes are in `secrets_vault.services`.
"""

import logging
from contextlib import contextmanager

from django.db import transaction
from django.utils import timezone

from aiemaily.ownership.binding import owner_scope
from secrets_vault import keystore
from secrets_vault.crypto import CiphertextError, SecretStr, decrypt_with_cipher, encrypt, unseal
from secrets_vault.models import AuditEvent, Secret
from secrets_vault.sealing import Lease, lease_seal, seal_aad, secret_aad
from secrets_vault.services import audit_record

logger = logging.getLogger(__name__)


def secret_store_sealed(*, owner_id, secret_id) -> Secret | None:
    """Open a pending secret's sealed value and encrypt it under the owner's DEK."""
    secret = Secret.objects.for_owner(owner_id).select_for_update().filter(pk=secret_id).first()
    if secret is None or secret.state != Secret.State.PENDING:
        return secret  # deleted meanwhile, or a retried task after success: nothing to do
    try:
        plaintext = unseal(keystore.vault_private_key(), bytes(secret.sealed),
                           aad=seal_aad(owner_id=owner_id, secret_id=secret.id, purpose=secret.purpose))
    except CiphertextError:
        secret.state, secret.sealed = Secret.State.FAILED, None
        secret.save(update_fields=["state", "sealed"])
        audit_record(owner_id=owner_id, action=AuditEvent.Action.REFUSED, process="vault",
                     purpose=secret.purpose, subject=secret.id, detail="sealed value did not open")
        logger.warning("sealed secret %s did not open; marked failed", secret.id)
        return secret
    version, key = keystore.active_dek(owner_id)
    secret.ciphertext = encrypt(key, plaintext, key_version=version,
                                aad=secret_aad(owner_id=owner_id, secret_id=secret.id, purpose=secret.purpose))
    secret.dek_version, secret.sealed, secret.state = version, None, Secret.State.STORED
    secret.updated_at = timezone.now()
    secret.save(update_fields=["ciphertext", "dek_version", "sealed", "state", "updated_at"])
    audit_record(owner_id=owner_id, action=AuditEvent.Action.STORE, process="vault", purpose=secret.purpose,
                 subject=secret.id, detail=f"encrypted under data key v{version}")
    return secret


class VaultRefusal(Exception):
    """The vault refused to decrypt: final, never retried, and audited by `audited_refusals`."""

    def __init__(self, reason: str, *, purpose: str = "", subject=""):
        super().__init__(reason)
        self.reason, self.purpose, self.subject = reason, purpose, str(subject)


@contextmanager
def audited_refusals(owner_id):
    """Record a refusal in its own transaction: the failed operation's transaction rolls back."""
    try:
        yield
    except VaultRefusal as refusal:
        with owner_scope(owner_id):
            audit_record(owner_id=owner_id, action=AuditEvent.Action.REFUSED, process="vault",
                         purpose=refusal.purpose, subject=refusal.subject, detail=refusal.reason)
        logger.warning("vault refused %s for secret %s: %s", refusal.purpose, refusal.subject, refusal.reason)
        raise


def _decrypt(secret: Secret, owner_id) -> bytes:
    if secret.state != Secret.State.STORED:
        raise VaultRefusal("secret is not stored", purpose=secret.purpose, subject=secret.id)
    try:
        aead = keystore.dek_cipher(owner_id, secret.dek_version)
    except KeyError:
        raise VaultRefusal("data key destroyed or unknown", purpose=secret.purpose, subject=secret.id) from None
    try:
        return decrypt_with_cipher(aead, bytes(secret.ciphertext),
                                   aad=secret_aad(owner_id=owner_id, secret_id=secret.id, purpose=secret.purpose))
    except CiphertextError:
        raise VaultRefusal("ciphertext did not open", purpose=secret.purpose, subject=secret.id) from None


def secret_lease(*, owner_id, secret_id, connection_id, purpose: str, ttl_seconds: int | None = None,
                 recipient: str = "sync") -> Lease:
    """Decrypt a secret only to re-seal it to a worker pool, bound to one connection and purpose.

    AI keys go only to the `ai` pool and mail credentials only to `sync`: a lease never crosses zones."""
    if (purpose == "ai_key") != (recipient == "ai"):
        raise VaultRefusal(f"{purpose} is never leased to the {recipient} pool", purpose=purpose, subject=secret_id)
    secret = Secret.objects.for_owner(owner_id).get(pk=secret_id)
    if secret.purpose != purpose:
        raise VaultRefusal("lease asked for another purpose", purpose=purpose, subject=secret.id)
    plaintext = _decrypt(secret, owner_id)
    lease = lease_seal(plaintext, owner_id=owner_id, connection_id=connection_id, purpose=purpose,
                       ttl_seconds=ttl_seconds, recipient=recipient)
    audit_record(owner_id=owner_id, action=AuditEvent.Action.LEASE, process="vault", purpose=purpose,
                 subject=connection_id, detail=f"lease {lease.lease_id} until {lease.expires_at}")
    return lease


def secret_reencrypt_owner(*, owner_id) -> int:
    """DEK rotation: a new DEK version, every secret re-encrypted under it, the old version destroyed.

    Safe to interrupt: each secret moves in its own step (row lock, re-read), secrets on the new
    version are skipped, and an old DEK is destroyed only when no secret uses it any more.
    """
    new_version = keystore.rotate_dek(owner_id)
    key = keystore.dek(owner_id, new_version)
    moved = 0
    for secret_id in Secret.objects.for_owner(owner_id).filter(state=Secret.State.STORED).exclude(
            dek_version=new_version).values_list("id", flat=True):
        with transaction.atomic():
            secret = Secret.objects.for_owner(owner_id).select_for_update().get(pk=secret_id)
            if secret.dek_version == new_version:
                continue
            plaintext = _decrypt(secret, owner_id)
            secret.ciphertext = encrypt(key, plaintext, key_version=new_version,
                                        aad=secret_aad(owner_id=owner_id, secret_id=secret.id, purpose=secret.purpose))
            secret.dek_version = new_version
            secret.save(update_fields=["ciphertext", "dek_version"])
            moved += 1
    in_use = set(Secret.objects.for_owner(owner_id).exclude(dek_version=None).values_list("dek_version", flat=True))
    for version in keystore.DataKey.objects.filter(owner_id=owner_id, active=False).values_list(
            "version", flat=True):
        if version not in in_use:
            keystore.retire_dek(owner_id, version)
    audit_record(owner_id=owner_id, action=AuditEvent.Action.ROTATE, process="vault", purpose="dek",
                 detail=f"data key v{new_version}; {moved} secrets re-encrypted")
    return moved


def owner_shred(*, owner_id) -> int:
    """Crypto-shredding: destroy the owner's DEKs. Must run before their rows and objects go."""
    destroyed = keystore.shred_owner(owner_id)
    audit_record(owner_id=owner_id, action=AuditEvent.Action.SHRED, process="vault", purpose="dek",
                 detail=f"{destroyed} data keys destroyed")
    return destroyed


# --- vault: secrets the vault obtains or uses itself (OAuth codes and refresh tokens) -------------

def sealed_open(*, owner_id, subject_id, purpose: str, sealed: bytes) -> SecretStr:
    """Open a value web sealed to the vault for one use (an OAuth code, a PKCE verifier). Not stored."""
    try:
        plaintext = unseal(keystore.vault_private_key(), bytes(sealed),
                           aad=seal_aad(owner_id=owner_id, secret_id=subject_id, purpose=purpose))
    except CiphertextError:
        raise VaultRefusal("sealed value did not open", purpose=purpose, subject=subject_id) from None
    return SecretStr(plaintext.decode())


def secret_open_sealed(*, owner_id, secret_id, purpose: str) -> SecretStr:
    """Open a pending secret that is used once and never stored under a DEK (an authorization code)."""
    secret = Secret.objects.for_owner(owner_id).filter(pk=secret_id).first()
    if secret is None or secret.purpose != purpose or secret.state != Secret.State.PENDING:
        raise VaultRefusal("no pending sealed secret of this purpose", purpose=purpose, subject=secret_id)
    value = sealed_open(owner_id=owner_id, subject_id=secret.id, purpose=purpose, sealed=secret.sealed)
    audit_record(owner_id=owner_id, action=AuditEvent.Action.DECRYPT, process="vault", purpose=purpose,
                 subject=secret.id, detail="opened once inside the vault; never stored")
    return value


def secret_reveal(*, owner_id, secret_id, purpose: str) -> SecretStr:
    """Decrypt a stored secret for use inside the vault itself (a refresh token); it is never handed out."""
    secret = Secret.objects.for_owner(owner_id).filter(pk=secret_id).first()
    if secret is None:
        raise VaultRefusal("secret is gone", purpose=purpose, subject=secret_id)
    if secret.purpose != purpose:
        raise VaultRefusal("asked for another purpose", purpose=purpose, subject=secret.id)
    value = SecretStr(_decrypt(secret, owner_id).decode())
    audit_record(owner_id=owner_id, action=AuditEvent.Action.DECRYPT, process="vault", purpose=purpose,
                 subject=secret.id, detail="used inside the vault; not handed out")
    return value


def secret_put(*, owner_id, purpose: str, value: SecretStr, secret_id=None, detail: str = "") -> Secret:
    """Encrypt a value the vault obtained itself under the owner's DEK: a new secret, or (with
    `secret_id`) a new value for an existing one, e.g. a rotated refresh token. Callers that
    replace a value serialise on a lock of their own (the connection row)."""
    version, key = keystore.active_dek(owner_id)
    if secret_id is None:
        secret = Secret(owner_id=owner_id, purpose=purpose)
    else:
        secret = Secret.objects.for_owner(owner_id).select_for_update().get(pk=secret_id)
        if secret.purpose != purpose:
            raise VaultRefusal("asked to replace a secret of another purpose", purpose=purpose, subject=secret.id)
    secret.ciphertext = encrypt(key, value.reveal().encode(), key_version=version,
                                aad=secret_aad(owner_id=owner_id, secret_id=secret.id, purpose=purpose))
    secret.dek_version, secret.sealed, secret.state = version, None, Secret.State.STORED
    secret.updated_at = timezone.now()
    secret.save()
    audit_record(owner_id=owner_id, action=AuditEvent.Action.STORE, process="vault", purpose=purpose,
                 subject=secret.id,
                 detail=detail or f"{'replaced' if secret_id else 'obtained'} by the vault; data key v{version}")
    return secret


def secret_destroy(*, owner_id, secret_id, detail: str = "") -> bool:
    """Delete a secret's row (ciphertext or sealed value) from the vault side; audited."""
    secret = Secret.objects.for_owner(owner_id).filter(pk=secret_id).first()
    if secret is None:
        return False
    audit_record(owner_id=owner_id, action=AuditEvent.Action.DELETE, process="vault", purpose=secret.purpose,
                 subject=secret.id, detail=detail)
    Secret.objects.for_owner(owner_id).filter(pk=secret.pk).delete()
    return True
