"""Sealing a secret the moment it arrives (web), and leasing it to a worker pool (vault).

Two pools receive leases, each with its own key pair: `sync` (mail credentials) and `ai` (BYOK AI
keys, opened only by worker-ai). A lease names its pool in its associated data, so one sealed for
one pool never opens in the other even if a key were shared by mistake.

Web seals to the vault's *public* key: it can seal but never open. The vault opens, encrypts under
the owner's DEK, and later re-seals to the sync pool's public key for a lease. Each sealed value's
associated data names its owner, its purpose and where it is going, so a sealed blob replayed into
another row, for another owner or purpose, does not open.

A lease's expiry is issued and checked on the database server's clock (aiemaily/ops/clock.py): a
worker whose own clock is skewed can neither open a lease after it expired nor be handed a longer one.
"""

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings

from aiemaily.ops.clock import database_now
from secrets_vault.crypto import CiphertextError, SecretStr, canonical_aad, decode_key, seal, unseal


class LeaseError(Exception):
    """A lease that is expired, for another connection/purpose/owner, or tampered with."""


def _public(name: str) -> bytes:
    value = getattr(settings, name)
    if not value:
        raise RuntimeError(f"{name} is not configured")
    return decode_key(value)


def seal_aad(*, owner_id, secret_id, purpose: str) -> bytes:
    return canonical_aad({"to": "vault", "owner_id": str(owner_id), "secret_id": str(secret_id),
                          "purpose": purpose})


def seal_for_vault(value: SecretStr, *, owner_id, secret_id, purpose: str) -> bytes:
    """Web side: seal a secret to the vault. The plaintext is not kept anywhere after this."""
    return seal(
        _public("AIEMAILY_VAULT_PUBLIC_KEY"),
        value.reveal().encode(),
        aad=seal_aad(owner_id=owner_id, secret_id=secret_id, purpose=purpose),
    )


def secret_aad(*, owner_id, secret_id, purpose: str) -> bytes:
    """Associated data of a stored secret's ciphertext (under the owner's DEK)."""
    return canonical_aad({"owner_id": str(owner_id), "secret_id": str(secret_id), "purpose": purpose})


@dataclass(frozen=True)
class Lease:
    """A credential sealed to the sync pool, bound to one owner, connection, purpose and expiry.

    Travels through the broker as a dict of ids and base64 sealed bytes: no plaintext, ever.
    """

    lease_id: str
    owner_id: str
    connection_id: str
    purpose: str
    expires_at: str
    sealed: str

    def __repr__(self):
        return f"<Lease {self.lease_id} {self.purpose} for {self.connection_id} until {self.expires_at}>"

    def as_message(self) -> dict:
        return {"lease_id": self.lease_id, "owner_id": self.owner_id, "connection_id": self.connection_id,
                "purpose": self.purpose, "expires_at": self.expires_at, "sealed": self.sealed}


# Which public/private key pair each lease recipient uses.
RECIPIENTS = {"sync": ("AIEMAILY_SYNC_PUBLIC_KEY", "AIEMAILY_SYNC_PRIVATE_KEY"),
              "ai": ("AIEMAILY_AI_PUBLIC_KEY", "AIEMAILY_AI_PRIVATE_KEY")}


def _lease_aad(lease_id, owner_id, connection_id, purpose, expires_at, to="sync") -> bytes:
    return canonical_aad({"to": to, "lease_id": str(lease_id), "owner_id": str(owner_id),
                          "connection_id": str(connection_id), "purpose": purpose, "expires_at": expires_at})


def lease_seal(plaintext: bytes, *, owner_id, connection_id, purpose: str, ttl_seconds: int | None = None,
               recipient: str = "sync") -> Lease:
    """Vault side: re-seal a decrypted credential to the recipient pool's public key.

    `connection_id` is the object the lease is bound to: a mail connection, or an AI key's id."""
    ttl = ttl_seconds if ttl_seconds is not None else settings.AIEMAILY_LEASE_SECONDS
    lease_id = str(uuid.uuid4())
    expires_at = (database_now() + timedelta(seconds=ttl)).isoformat()
    sealed = seal(
        _public(RECIPIENTS[recipient][0]), plaintext,
        aad=_lease_aad(lease_id, owner_id, connection_id, purpose, expires_at, recipient),
    )
    return Lease(lease_id, str(owner_id), str(connection_id), purpose, expires_at,
                 base64.b64encode(sealed).decode())


def lease_open(message: dict, *, owner_id, connection_id, purpose: str, recipient: str = "sync") -> SecretStr:
    """Pool side: open a lease for exactly this owner, connection and purpose, before it expires."""
    private = getattr(settings, RECIPIENTS[recipient][1])
    if not private:
        raise LeaseError(f"this process holds no {recipient} private key")
    try:
        lease = Lease(**{k: message[k] for k in Lease.__dataclass_fields__})
        expires = datetime.fromisoformat(lease.expires_at)
    except (KeyError, TypeError, ValueError):
        raise LeaseError("malformed lease") from None
    if (lease.owner_id, lease.connection_id, lease.purpose) != (str(owner_id), str(connection_id), purpose):
        raise LeaseError("lease was issued for another owner, connection or purpose")
    if expires.tzinfo is None or expires <= database_now():
        raise LeaseError("lease expired")
    try:
        plaintext = unseal(
            decode_key(private), base64.b64decode(lease.sealed),
            aad=_lease_aad(lease.lease_id, owner_id, connection_id, purpose, lease.expires_at, recipient),
        )
    except (CiphertextError, ValueError):
        raise LeaseError("lease does not open (tampered, or sealed for another key)") from None
    return SecretStr(plaintext.decode())
