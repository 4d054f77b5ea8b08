"""The vault's cryptographic primitives: versioned AES-256-GCM, sealed boxes, and secret wrappers.

Everything here is pure (no Django, no I/O) so any process can import it: the web tier seals
secrets to the vault's public key, the vault worker encrypts them under per-user data keys, the
sync worker opens leases sealed to it. Two wire formats:

    ciphertext  = header(5) || nonce(12) || AES-256-GCM(ciphertext || tag(16))
                  header = format version (1 byte, 0x01) || key version (uint32, big-endian)
                  GCM associated data = header || caller's aad

    sealed box  = version (1 byte, 0x01) || ephemeral X25519 public key (32) || nonce(12) || GCM(…)
                  key = HKDF-SHA256(X25519(ephemeral, recipient),
                                    info = label || ephemeral public || recipient public)
                  GCM associated data = version || ephemeral public || caller's aad

The header is authenticated, so a ciphertext cannot be replayed under another key version and a
sealed box cannot be re-targeted. Every failure to open raises CiphertextError, whose message names
what went wrong structurally and never carries key or plaintext bytes.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import functools
import hmac
import json
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "KEY_SIZE",
    "NONCE_SIZE",
    "SEAL_VERSION",
    "TAG_SIZE",
    "CiphertextError",
    "Header",
    "SealingKeyPair",
    "SecretBytes",
    "SecretStr",
    "build_header",
    "canonical_aad",
    "cipher",
    "decode_key",
    "decrypt",
    "decrypt_with",
    "decrypt_with_cipher",
    "encode_key",
    "encrypt",
    "generate_key",
    "generate_sealing_keypair",
    "load_private_key",
    "parse_header",
    "public_key_bytes",
    "seal",
    "split_ciphertext",
    "unseal",
    "zero",
]

KEY_SIZE = 32  # AES-256 and X25519 keys are both 32 raw bytes
NONCE_SIZE = 12  # 96-bit GCM nonce: the size GCM is specified and analysed for
TAG_SIZE = 16
FORMAT_VERSION = 1
SEAL_VERSION = 1
_HEADER = struct.Struct(">BI")  # format version, key version
HEADER_SIZE = _HEADER.size
_MAX_KEY_VERSION = 2**32 - 1
_SEAL_PREFIX = 1 + KEY_SIZE  # version byte + ephemeral public key
# Domain separation: a key derived for a sealed box can never equal one derived for anything else.
_SEAL_INFO = b"aiemaily/sealed-box/v1"


class CiphertextError(Exception):
    """A ciphertext or sealed box could not be opened: corrupt, tampered, wrong key/AAD, or unknown format.

    Deliberately one type for all causes: callers must not branch on (or leak to users) which
    check failed, and the message only ever describes structure, never key or plaintext bytes.
    """


def _fail(reason: str) -> NoReturn:
    # `from None` drops the underlying exception, so no library message or local can ride along.
    raise CiphertextError(reason) from None


# --- associated data ---------------------------------------------------------------------------


def canonical_aad(fields: Mapping[str, str]) -> bytes:
    """Canonical bytes for a set of named context values (owner id, object id, purpose, ...).

    Sorted keys and fixed separators make the encoding independent of dict order; JSON escaping
    makes it unambiguous (no value can smuggle in a separator). Used as GCM associated data here
    and as the KMS wrapping context, so both sides always agree on the bytes.
    """
    for name, value in fields.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("associated data names and values must be str")
    return json.dumps(dict(fields), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --- versioned AES-256-GCM ---------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """The authenticated prefix of a ciphertext: which format, and which key version sealed it."""

    format_version: int
    key_version: int


def generate_key() -> bytes:
    """A fresh random AES-256 key (a DEK or a local KEK)."""
    return AESGCM.generate_key(bit_length=256)


def build_header(key_version: int) -> bytes:
    """The 5-byte header for the current format and the given key version."""
    if not isinstance(key_version, int) or not 0 <= key_version <= _MAX_KEY_VERSION:
        raise ValueError("key_version must be an integer in 0..2**32-1")
    return _HEADER.pack(FORMAT_VERSION, key_version)


def parse_header(blob: bytes) -> Header:
    """Read the header of a ciphertext without decrypting it (to pick the right key version).

    The header is only trustworthy after decrypt() succeeds: GCM authenticates it then.
    """
    if len(blob) < HEADER_SIZE + NONCE_SIZE + TAG_SIZE:
        _fail("ciphertext is too short")
    format_version, key_version = _HEADER.unpack_from(blob)
    if format_version != FORMAT_VERSION:
        _fail(f"unknown ciphertext format version {format_version}")
    return Header(format_version=format_version, key_version=key_version)


def _check_key(key: bytes) -> None:
    # Wrong-length keys are programming errors, not bad ciphertexts: say so without the key.
    if not isinstance(key, bytes | bytearray | memoryview) or len(key) != KEY_SIZE:
        raise ValueError("key must be 32 bytes (AES-256)")


def _check_aad(aad: bytes) -> None:
    if not isinstance(aad, bytes | bytearray | memoryview):
        raise TypeError("aad must be bytes (use canonical_aad() for named fields)")


def encrypt(key: bytes, plaintext: bytes, *, aad: bytes, key_version: int) -> bytes:
    """Encrypt under `key`, recording `key_version` in the header; `aad` must be given again to decrypt."""
    return encrypt_with_cipher(cipher(key), plaintext, aad=aad, key_version=key_version)


def encrypt_with_cipher(aead: AESGCM, plaintext: bytes, *, aad: bytes, key_version: int) -> bytes:
    """encrypt() with a prepared cipher() (the same output format): for a caller sealing many small
    values under one key (a message's metadata fields), where the key schedule would cost as much
    as the encryption."""
    _check_aad(aad)
    header = build_header(key_version)
    # Random 96-bit nonces: safe up to ~2**32 messages per key, far beyond one DEK's or KEK's use.
    nonce = os.urandom(NONCE_SIZE)
    return header + nonce + aead.encrypt(nonce, bytes(plaintext), header + bytes(aad))


def _split(blob: bytes, prefix_size: int) -> tuple[bytes, bytes, bytes]:
    blob = bytes(blob)
    return blob[:prefix_size], blob[prefix_size:prefix_size + NONCE_SIZE], blob[prefix_size + NONCE_SIZE:]


def split_ciphertext(blob: bytes) -> tuple[bytes, bytes, bytes]:
    """(header, nonce, ciphertext-with-tag) of a blob in the encrypt() format; no checks made."""
    return _split(blob, HEADER_SIZE)


def decrypt(key: bytes, blob: bytes, *, aad: bytes) -> bytes:
    """Decrypt a blob made by encrypt(); any corruption, wrong key or wrong aad raises CiphertextError."""
    return decrypt_with_cipher(cipher(key), blob, aad=aad)


def cipher(key: bytes) -> AESGCM:
    """An AES-256-GCM object for `key`, for a caller that decrypts many blobs under one key (the DEK
    cache): building it costs as much as a 64-byte decryption, so a hot path builds it once."""
    _check_key(key)
    return AESGCM(bytes(key))


def decrypt_with_cipher(aead: AESGCM, blob: bytes, *, aad: bytes) -> bytes:
    """decrypt() with a prepared cipher(); the same checks, the same errors."""
    # The checks of _check_aad() and parse_header() inline: this runs once per secret decrypted.
    if not isinstance(aad, bytes | bytearray | memoryview):
        raise TypeError("aad must be bytes (use canonical_aad() for named fields)")
    if type(blob) is not bytes:
        blob = bytes(blob)
    if len(blob) < HEADER_SIZE + NONCE_SIZE + TAG_SIZE:
        _fail("ciphertext is too short")
    if blob[0] != FORMAT_VERSION:
        _fail(f"unknown ciphertext format version {blob[0]}")
    try:
        return aead.decrypt(blob[HEADER_SIZE:HEADER_SIZE + NONCE_SIZE], blob[HEADER_SIZE + NONCE_SIZE:],
                            blob[:HEADER_SIZE] + aad)
    except InvalidTag:
        _fail("ciphertext failed authentication (tampered, wrong key or wrong associated data)")


def decrypt_with(keys: Mapping[int, bytes] | Callable[[int], bytes], blob: bytes, *, aad: bytes) -> bytes:
    """Decrypt with whichever key version the header names, looked up in a mapping or a callable.

    The convenience for rotation: old ciphertexts keep opening while new ones use the new version.
    A lookup that finds nothing (KeyError or LookupError) is reported as CiphertextError.
    """
    version = parse_header(blob).key_version
    try:
        key = keys[version] if isinstance(keys, Mapping) else keys(version)
    except LookupError:
        _fail(f"no key for key version {version}")
    return decrypt(key, blob, aad=aad)


# --- sealed boxes (X25519 + HKDF-SHA256 + AES-256-GCM) -----------------------------------------


@dataclass(frozen=True, repr=False)
class SealingKeyPair:
    """A raw X25519 key pair; the private half is wrapped so it never prints."""

    private: SecretBytes
    public: bytes

    def __repr__(self) -> str:
        return f"SealingKeyPair(private={self.private!r}, public={encode_key(self.public)!r})"


def generate_sealing_keypair() -> SealingKeyPair:
    """A new X25519 key pair as raw 32-byte keys (base64 them with encode_key() for env vars)."""
    private = X25519PrivateKey.generate()
    raw = private.private_bytes_raw()
    return SealingKeyPair(private=SecretBytes(raw), public=private.public_key().public_bytes_raw())


def load_private_key(private_key: X25519PrivateKey | SecretBytes | bytes) -> X25519PrivateKey:
    """Accept a private key object, raw 32 bytes, or SecretBytes holding them."""
    if isinstance(private_key, X25519PrivateKey):
        return private_key
    raw = private_key.reveal() if isinstance(private_key, SecretBytes) else private_key
    if not isinstance(raw, bytes | bytearray) or len(raw) != KEY_SIZE:
        raise ValueError("an X25519 private key must be 32 raw bytes")
    return X25519PrivateKey.from_private_bytes(bytes(raw))


def public_key_bytes(private_key: X25519PrivateKey | SecretBytes | bytes) -> bytes:
    """The raw public key belonging to a private key (to publish it to the web tier)."""
    return load_private_key(private_key).public_key().public_bytes_raw()


def _seal_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    # Both public keys in `info` bind the derived key to this exact pair: a box cannot be
    # re-addressed by swapping the ephemeral key, and the raw DH output is never used directly.
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None,
                info=_SEAL_INFO + ephemeral_public + recipient_public)
    return hkdf.derive(shared)


def seal(recipient_public_key: bytes, plaintext: bytes, *, aad: bytes) -> bytes:
    """Encrypt to a recipient's X25519 public key; only the matching private key (and aad) opens it."""
    _check_aad(aad)
    if not isinstance(recipient_public_key, bytes | bytearray) or len(recipient_public_key) != KEY_SIZE:
        raise ValueError("recipient public key must be 32 raw bytes")
    recipient_public = bytes(recipient_public_key)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    try:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    except ValueError:
        # cryptography refuses low-order points (all-zero shared secret): not a usable recipient.
        raise ValueError("recipient public key is not a valid X25519 key") from None
    key = _seal_key(shared, ephemeral_public, recipient_public)
    prefix = bytes([SEAL_VERSION]) + ephemeral_public
    # The key is single-use (fresh ephemeral each time), so a random nonce is belt and braces.
    nonce = os.urandom(NONCE_SIZE)
    return prefix + nonce + AESGCM(key).encrypt(nonce, bytes(plaintext), prefix + bytes(aad))


def unseal(recipient_private_key: X25519PrivateKey | SecretBytes | bytes, sealed: bytes, *, aad: bytes) -> bytes:
    """Open a sealed box; wrong key, wrong aad or any modification raises CiphertextError."""
    _check_aad(aad)
    private = load_private_key(recipient_private_key)
    sealed = bytes(sealed)
    if len(sealed) < _SEAL_PREFIX + NONCE_SIZE + TAG_SIZE:
        _fail("sealed box is too short")
    if sealed[0] != SEAL_VERSION:
        _fail(f"unknown sealed box version {sealed[0]}")
    prefix, nonce, body = _split(sealed, _SEAL_PREFIX)
    ephemeral_public = prefix[1:]
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    except ValueError:
        _fail("sealed box carries an invalid ephemeral key")
    key = _seal_key(shared, ephemeral_public, private.public_key().public_bytes_raw())
    try:
        return AESGCM(key).decrypt(nonce, body, prefix + bytes(aad))
    except InvalidTag:
        _fail("sealed box failed authentication (tampered, wrong key or wrong associated data)")


# --- key encoding for environment variables ----------------------------------------------------


def encode_key(raw: bytes | SecretBytes) -> str:
    """Standard base64 of a raw key, for an environment variable or a key file."""
    data = raw.reveal() if isinstance(raw, SecretBytes) else bytes(raw)
    return base64.b64encode(data).decode("ascii")


def decode_key(text: str, *, size: int = KEY_SIZE) -> bytes:
    """Decode base64 key text (surrounding whitespace ignored); the error never echoes the text."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError, AttributeError):
        raise ValueError("key is not valid base64") from None
    if len(raw) != size:
        raise ValueError(f"key must decode to {size} bytes, got {len(raw)}")
    return raw


# --- secrets that do not print -----------------------------------------------------------------

_MASK = "****"


class _Secret:
    """Shared behaviour: masked repr/str/format, constant-time equality, no pickling, explicit reveal()."""

    __slots__ = ("_value",)

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{_MASK}')"

    def __str__(self) -> str:
        return _MASK

    def __format__(self, format_spec: str) -> str:
        # Ignore the spec: f"{s:>40}" must not become a way to observe anything about the value.
        return _MASK

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return hmac.compare_digest(self._raw(), other._raw())  # type: ignore[attr-defined]

    # Hashing would need the value; secrets are not dict keys.
    __hash__ = None  # type: ignore[assignment]

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        # Pickling is how objects reach Celery brokers and caches: a secret must never travel that way.
        raise TypeError(f"{type(self).__name__} cannot be pickled or serialised")

    def _raw(self) -> bytes:
        raise NotImplementedError


class SecretStr(_Secret):
    """A text secret (password, API key) that shows as SecretStr('****') everywhere but reveal()."""

    __slots__ = ()

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("SecretStr holds str")
        self._value = value

    def reveal(self) -> str:
        """The secret itself: call this only at the point of use, never to log or store."""
        return self._value

    def _raw(self) -> bytes:
        return self._value.encode("utf-8")


class SecretBytes(_Secret):
    """A binary secret (a DEK, a private key) kept in a bytearray so wipe() can overwrite it."""

    __slots__ = ()

    def __init__(self, value: bytes | bytearray) -> None:
        if not isinstance(value, bytes | bytearray):
            raise TypeError("SecretBytes holds bytes")
        self._value = bytearray(value)

    def reveal(self) -> bytes:
        """A copy of the secret bytes: call this only at the point of use."""
        return bytes(self._value)

    def wipe(self) -> None:
        """Overwrite the held bytes with zeros (copies already revealed are not reachable here)."""
        zero(self._value)

    def _raw(self) -> bytes:
        return bytes(self._value)


def zero(buffer: bytearray | memoryview) -> None:
    """Best-effort overwrite of a mutable buffer with zeros.

    Python may already have copied the data (immutable bytes, str, library internals), so this only
    shortens the lifetime of this one copy. ctypes.memset writes in place, which a slice assignment
    is not guaranteed to do.
    """
    view = memoryview(buffer)
    if view.readonly:
        raise TypeError("zero() needs a writable buffer such as a bytearray")
    if view.nbytes:
        array = _char_array(view.nbytes).from_buffer(view.cast("B"))
        ctypes.memset(ctypes.addressof(array), 0, view.nbytes)


@functools.lru_cache(maxsize=64)
def _char_array(size: int):
    # Making a ctypes array type costs more than the memset: every stored message zeroes a 32-byte key.
    return ctypes.c_char * size
