"""The one interface every KMS backend implements, and the errors they raise.

A KeyEncryptionService wraps and unwraps data keys (DEKs) under a key-encryption key (KEK) that it
holds and never reveals. Every wrap is bound to a context (owner id, purpose, ...): unwrapping with a
different context fails, so a wrapped DEK copied to another owner's row opens nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from secrets_vault.crypto import canonical_aad

__all__ = [
    "KeyEncryptionService",
    "KmsConfigurationError",
    "KmsError",
    "KmsUnavailable",
    "WrappedKey",
    "context_aad",
    "validate_context",
]

# A DEK is an AES-256 key; anything else handed to wrap() is a caller bug worth stopping early.
DEK_SIZES = frozenset({16, 24, 32})


class KmsError(Exception):
    """The KMS refused an operation: wrong context, tampered or foreign wrapped key, bad request.

    Messages describe what failed, never key material, PINs or plaintext.
    """


class KmsUnavailable(KmsError):
    """The configured KMS cannot be used right now: unreachable, missing key material, bad login.

    A subclass of KmsError so `except KmsError` covers everything, while callers that want to
    retry later (the KMS may come back) can catch this one alone. Never a cue to fall back.
    """


class KmsConfigurationError(KmsError):
    """The KMS settings themselves are wrong (unknown backend, missing or unknown parameter)."""


@dataclass(frozen=True)
class WrappedKey:
    """A DEK encrypted under a KEK, plus which KEK (id and version) did it.

    `ciphertext` is safe to store and print: it is useless without the KMS and the context.
    """

    ciphertext: bytes
    key_id: str
    key_version: int


def validate_context(context: Mapping[str, str]) -> dict[str, str]:
    """A non-empty mapping of str to str; an empty context would bind the DEK to nothing."""
    if not isinstance(context, Mapping) or not context:
        raise KmsError("a wrapping context (e.g. owner id) is required")
    if not all(isinstance(key, str) and isinstance(value, str) for key, value in context.items()):
        raise KmsError("wrapping context names and values must be str")
    return dict(context)


def context_aad(context: Mapping[str, str]) -> bytes:
    """The associated-data bytes for a context: canonical JSON with sorted keys."""
    return canonical_aad(validate_context(context))


def validate_dek(dek: bytes) -> bytes:
    if not isinstance(dek, bytes | bytearray) or len(dek) not in DEK_SIZES:
        raise KmsError("a data key must be 16, 24 or 32 bytes")
    return bytes(dek)


class KeyEncryptionService(ABC):
    """Wrap/unwrap DEKs under a KEK that never leaves the service.

    Implementations: LocalKms (KEK files), Pkcs11Kms (an HSM), AwsKms (AWS KMS). All must pass the
    same contract tests (tests/vault/test_kms_contract.py).
    """

    #: short backend name, as used in kms_from_settings ("local", "pkcs11", "aws")
    backend: str = ""

    @property
    @abstractmethod
    def key_version(self) -> int:
        """The KEK version new wraps use."""

    @abstractmethod
    def wrap(self, dek: bytes, *, context: Mapping[str, str]) -> WrappedKey:
        """Encrypt a DEK under the current KEK version, bound to `context`."""

    @abstractmethod
    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytes:
        """Decrypt a wrapped DEK; the same `context` as at wrap time is required."""

    def rotate(self) -> int:
        """Create a new KEK version for new wraps (old versions keep unwrapping); return it."""
        raise KmsError(f"the {self.backend or type(self).__name__} backend does not support rotation")

    def needs_rewrap(self, wrapped: WrappedKey) -> bool:
        """True when `wrapped` was made with an older KEK version than the current one."""
        return wrapped.key_version != self.key_version

    def rewrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> WrappedKey:
        """Re-wrap a DEK under the current KEK version (for online KEK rotation).

        Idempotent in effect: re-wrapping an already current key yields another valid wrapping of
        the same DEK. Backends that can do this without exposing the DEK override it.
        """
        dek = bytearray(self.unwrap(wrapped, context=context))
        try:
            return self.wrap(bytes(dek), context=context)
        finally:
            dek[:] = bytes(len(dek))

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to release
        """Release sessions/handles; the object must not be used afterwards."""

    def __enter__(self) -> KeyEncryptionService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
