"""The `local` KMS backend: KEKs kept in files that only the vault worker can read.

The embedded default for development and single-host installs. Each KEK version is one file of
32 random bytes, mode 0600, in a directory of mode 0700:

    <key_dir>/kek-v1.key   <key_dir>/kek-v2.key   ...

The highest version on disk wraps new DEKs (re-read on every wrap, so a rotation done by another
process is picked up at once); every older file keeps unwrapping what it wrapped until an operator
re-wraps and deletes it. A wrap is the crypto module's versioned AES-256-GCM ciphertext of
the DEK with the canonical context as associated data, so the KEK version travels in the header.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Mapping
from pathlib import Path

from secrets_vault import crypto
from secrets_vault.kms.base import (
    KeyEncryptionService,
    KmsError,
    KmsUnavailable,
    WrappedKey,
    context_aad,
    validate_dek,
)

__all__ = ["LocalKms"]

_KEY_FILE = re.compile(r"^kek-v(\d+)\.key$")


def key_file_name(version: int) -> str:
    return f"kek-v{version}.key"


def key_id_for(version: int) -> str:
    return f"local:kek-v{version}"


class LocalKms(KeyEncryptionService):
    """KEK files in `key_dir`; `create=True` makes the directory and version 1 when none exists."""

    backend = "local"

    def __init__(self, key_dir: str | os.PathLike[str], *, create: bool = False) -> None:
        self._dir = Path(key_dir)
        self._keys: dict[int, bytes] = {}
        self._lock = threading.Lock()
        if create:
            try:
                self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise KmsUnavailable(f"cannot create local KEK directory {self._dir}: {exc.strerror}") from None
        if not self._dir.is_dir():
            raise KmsUnavailable(f"local KEK directory {self._dir} does not exist")
        versions = self._versions_on_disk()
        if not versions:
            if not create:
                raise KmsUnavailable(f"no KEK file (kek-v<N>.key) in {self._dir}")
            self._write_new_key(1)
            versions = [1]
        self._load(max(versions))  # fail now, not on the first request, if the file is unreadable

    def __repr__(self) -> str:
        return f"LocalKms(key_dir={str(self._dir)!r})"

    @property
    def key_version(self) -> int:
        versions = self._versions_on_disk()
        if not versions:
            raise KmsUnavailable(f"no KEK file (kek-v<N>.key) in {self._dir}")
        return versions[-1]

    def wrap(self, dek: bytes, *, context: Mapping[str, str]) -> WrappedKey:
        aad = context_aad(context)
        version = self.key_version
        blob = crypto.encrypt(self._load(version), validate_dek(dek), aad=aad, key_version=version)
        return WrappedKey(ciphertext=blob, key_id=key_id_for(version), key_version=version)

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytes:
        aad = context_aad(context)
        try:
            version = crypto.parse_header(wrapped.ciphertext).key_version
        except crypto.CiphertextError:
            raise KmsError("wrapped key is corrupt or not from the local backend") from None
        # The header is authenticated by GCM below; the record's own fields must agree with it.
        if version != wrapped.key_version or wrapped.key_id != key_id_for(version):
            raise KmsError("wrapped key's id/version does not match its ciphertext")
        try:
            return crypto.decrypt(self._load(version), wrapped.ciphertext, aad=aad)
        except crypto.CiphertextError:
            raise KmsError("cannot unwrap: wrong context, or the wrapped key was tampered with") from None

    def rotate(self) -> int:
        """Write kek-v<N+1>.key, which makes it current; concurrent rotations never overwrite a file."""
        with self._lock:
            version = max(self._versions_on_disk(), default=0) + 1
            self._write_new_key(version)
            return version

    # --- files ---------------------------------------------------------------------------------

    def _versions_on_disk(self) -> list[int]:
        try:
            names = os.listdir(self._dir)
        except OSError as exc:
            raise KmsUnavailable(f"cannot list local KEK directory {self._dir}: {exc.strerror}") from None
        return sorted(int(match.group(1)) for name in names if (match := _KEY_FILE.match(name)))

    def _write_new_key(self, version: int) -> None:
        path = self._dir / key_file_name(version)
        temp = self._dir / f".{key_file_name(version)}.{os.getpid()}.{threading.get_ident()}.tmp"
        # 0o600 from the first byte (not chmod afterwards), so no window where others can read it.
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise KmsUnavailable(f"cannot create a KEK file in {self._dir}: {exc.strerror}") from None
        try:
            try:
                os.write(fd, crypto.generate_key())
                os.fsync(fd)
            finally:
                os.close(fd)
            # link() publishes the complete file atomically and fails if the name exists: a reader
            # never sees a half-written KEK and two rotating processes cannot both claim a version.
            os.link(temp, path)
        except FileExistsError:
            raise KmsError(f"KEK version {version} already exists in {self._dir}") from None
        except OSError as exc:
            raise KmsUnavailable(f"cannot create KEK file {path}: {exc.strerror}") from None
        finally:
            temp.unlink(missing_ok=True)

    def _load(self, version: int) -> bytes:
        path = self._dir / key_file_name(version)
        key = self._keys.get(version)
        # The cache saves reading the file, not checking it: deleting a retired KEK file (after
        # re-wrapping) must stop it from unwrapping at once, in every running worker.
        if key is not None and path.exists():
            return key
        self._keys.pop(version, None)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise KmsUnavailable(f"KEK version {version} not found ({path} is missing)") from None
        except OSError as exc:
            raise KmsUnavailable(f"cannot read KEK file {path}: {exc.strerror}") from None
        try:
            mode = os.fstat(fd).st_mode
            # Like ssh with private keys: a KEK others can read is already compromised, say so loudly.
            if stat.S_IMODE(mode) & 0o077:
                raise KmsError(f"KEK file {path} is accessible by group/others; it must be mode 0600")
            key = os.read(fd, crypto.KEY_SIZE + 1)
        finally:
            os.close(fd)
        if len(key) != crypto.KEY_SIZE:
            raise KmsError(f"KEK file {path} does not hold exactly {crypto.KEY_SIZE} bytes")
        self._keys[version] = key
        return key
