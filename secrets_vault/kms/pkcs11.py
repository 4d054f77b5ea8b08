"""The `pkcs11` KMS backend: a KEK generated inside an HSM that cannot leave it.

Any PKCS#11 module works (tested against SoftHSM2). The KEK is an AES-256 secret key object stored
on the token with SENSITIVE=true, EXTRACTABLE=false and only ENCRYPT/DECRYPT usage, so neither its
value nor a wrapped copy of it can be read out. Versions are separate key objects that share the
configured label and carry their version number (4 bytes, big-endian) as CKA_ID.

Wrapping is CKM_AES_GCM *encryption* of the DEK inside the HSM (SoftHSM2, like many HSMs, offers
GCM only for encrypt/decrypt, not C_WrapKey), laid out exactly like crypto.encrypt():

    header(format version, KEK version) || nonce(12) || ciphertext || tag(16)
    GCM associated data = header || canonical JSON of the context
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.mechanisms import GCMParams

from secrets_vault import crypto
from secrets_vault.crypto import SecretStr
from secrets_vault.kms.base import (
    KeyEncryptionService,
    KmsError,
    KmsUnavailable,
    WrappedKey,
    context_aad,
    validate_dek,
)

__all__ = ["Pkcs11Kms"]

_VERSION_ID_SIZE = 4
# Errors that mean "the token or the session went away", as opposed to "this input is bad".
_UNAVAILABLE_ERRORS = (
    p11.DeviceError,
    p11.DeviceMemory,
    p11.DeviceRemoved,
    p11.TokenNotPresent,
    p11.TokenNotRecognised,
    p11.SessionClosed,
    p11.SessionHandleInvalid,
    p11.UserNotLoggedIn,
    p11.HostMemory,
)
_STALE_HANDLE_ERRORS = (p11.KeyHandleInvalid, p11.ObjectHandleInvalid)
# Everything the KEK object is created with. EXTRACTABLE/SENSITIVE keep the value in the HSM;
# no WRAP/UNWRAP/SIGN/DERIVE means the key cannot be turned into an oracle for other operations;
# MODIFIABLE/COPYABLE false means nobody can later relax the attributes through a copy or an edit.
_KEK_TEMPLATE: dict[Attribute, Any] = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.ENCRYPT: True,
    Attribute.DECRYPT: True,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
    Attribute.SIGN: False,
    Attribute.VERIFY: False,
    Attribute.DERIVE: False,
    Attribute.MODIFIABLE: False,
    Attribute.COPYABLE: False,
}
# python-pkcs11 keeps one initialised module per path and process; after a fork (Celery prefork)
# the child must re-initialise it once before any session works. Remember who initialised what.
_initialised_in: dict[str, int] = {}
_init_lock = threading.Lock()
# PKCS#11 logins are per process and token, not per session: while any session is open after a
# login, C_Login answers "already logged in" without checking the PIN, and the token logs out
# when the last session closes. So per (module, token) remember which PIN logged in and how many
# of our sessions keep that login alive: a second instance joins the login only with the same PIN.
_logged_in_with: dict[tuple[str, str], SecretStr] = {}
_open_sessions: dict[tuple[str, str], int] = {}
# How often each module has been re-initialised (C_Finalize + C_Initialize) in this process. Every
# session opened before is gone then, and its handle number may already name someone else's new
# session: an instance holding an older session opens a new one and never closes the old handle.
_generation: dict[str, int] = {}


def _load_module(module_path: str) -> Any:
    with _init_lock:
        try:
            lib = pkcs11.lib(module_path)
        except p11.PKCS11Error:
            # The library's message includes the dlopen error: useful, and it holds no secret.
            raise KmsUnavailable(f"cannot load the PKCS#11 module {module_path}") from None
        if _initialised_in.get(module_path, os.getpid()) != os.getpid():
            _reinitialise_locked(lib, module_path)
        _initialised_in[module_path] = os.getpid()
        return lib


def _reinitialise(module_path: str, *, seen: int) -> None:
    """Re-initialise the module after a session failed, unless another instance has done so since
    `seen` (the generation its failed session belonged to). It is how a PKCS#11 library drops a
    link to its HSM that went away and connects afresh: SoftHSM2, like many network HSM clients,
    does not see a token that left and came back until then."""
    with _init_lock:
        if _generation.get(module_path, 0) != seen:
            return
        try:
            _reinitialise_locked(pkcs11.lib(module_path), module_path)
        except p11.PKCS11Error as exc:
            raise KmsUnavailable(f"cannot re-initialise the PKCS#11 module ({type(exc).__name__})") from None
        _initialised_in[module_path] = os.getpid()


def _reinitialise_locked(lib: Any, module_path: str) -> None:
    lib.reinitialize()
    # A re-initialised module has no sessions and no login, whatever it (or a parent) had.
    for login in [login for login in _open_sessions if login[0] == module_path]:
        del _open_sessions[login]
    _generation[module_path] = _generation.get(module_path, 0) + 1


def _version_id(version: int) -> bytes:
    return version.to_bytes(_VERSION_ID_SIZE, "big")


class Pkcs11Kms(KeyEncryptionService):
    """KEK versions labelled `key_label` on the token `token_label`, used through one logged-in session.

    `create=True` generates version 1 when no key with that label exists yet. The user PIN is held
    only as a SecretStr (masked in any repr or log), to log in again in a forked worker child and
    after an outage.

    An HSM that goes away (network down, token removed) fails the call under way with
    KmsUnavailable, and that session is dropped: the next call re-initialises the module and logs
    in afresh, so the process recovers by itself once the HSM is back. Nothing is kept or tried
    in its place: without the HSM nothing is wrapped or unwrapped.
    """

    backend = "pkcs11"

    def __init__(self, module_path: str, token_label: str, user_pin: str | SecretStr, key_label: str, *,
                 create: bool = False) -> None:
        self.module_path = module_path
        self.token_label = token_label
        self.key_label = key_label
        self._lock = threading.RLock()
        self._session: Any = None
        self._pid = 0
        self._generation = 0
        self._closed = False
        # The generation of a session dropped after a failure: the next call must reconnect.
        self._failed_generation: int | None = None
        # version -> key object handle, for unwrap (the hot path). Versions never change once
        # created, so a cached handle stays right until its object is deleted (handled below).
        self._handles: dict[int, Any] = {}
        self._login_key = (module_path, token_label)
        self._pin = user_pin if isinstance(user_pin, SecretStr) else SecretStr(user_pin)
        self._open()
        with self._lock:
            if not self._versions():
                if not create:
                    self.close()
                    raise KmsUnavailable(f"no key labelled {key_label!r} on PKCS#11 token {token_label!r}")
                self._generate(1)

    def __repr__(self) -> str:
        return f"Pkcs11Kms(token_label={self.token_label!r}, key_label={self.key_label!r})"

    # --- session -------------------------------------------------------------------------------

    def _open(self) -> None:
        if self._failed_generation is None:
            self._connect()
            return
        # Reconnecting after a failure: through a re-initialised module (see _reinitialise).
        _reinitialise(self.module_path, seen=self._failed_generation)
        try:
            self._connect()
        except KmsUnavailable:
            # Still out of reach: the next call re-initialises again, the HSM may be back by then.
            self._failed_generation = _generation.get(self.module_path, 0)
            raise

    def _connect(self) -> None:
        lib = _load_module(self.module_path)
        try:
            token = lib.get_token(token_label=self.token_label)
        except (p11.NoSuchToken, p11.MultipleTokensReturned):
            raise KmsUnavailable(f"no single PKCS#11 token labelled {self.token_label!r}") from None
        except p11.PKCS11Error as exc:
            raise KmsUnavailable(f"cannot reach PKCS#11 token {self.token_label!r} ({type(exc).__name__})") from None
        login = (self.module_path, self.token_label)
        with _init_lock:
            try:
                session = self._login(token, login)
            except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange, p11.PinLocked, p11.PinExpired):
                raise self._login_refused() from None
            except p11.PKCS11Error as exc:
                raise KmsUnavailable(f"cannot log in to PKCS#11 token {self.token_label!r} "
                                     f"({type(exc).__name__})") from None
            _logged_in_with[login] = self._pin
            _open_sessions[login] = _open_sessions.get(login, 0) + 1
            generation = _generation.get(self.module_path, 0)
        self._session, self._pid, self._handles, self._login_key = session, os.getpid(), {}, login
        self._generation, self._failed_generation = generation, None

    def _login(self, token: Any, login: tuple[str, str]) -> Any:
        if _open_sessions.get(login, 0) > 0:
            # One of our sessions keeps the login alive: join it, but only with the same PIN.
            if _logged_in_with.get(login) != self._pin:
                raise p11.PinIncorrect()
            return token.open(rw=True)
        try:
            return token.open(rw=True, user_pin=self._pin.reveal())
        except p11.UserAlreadyLoggedIn:
            # Code outside this class logged the process in; the PIN cannot be checked against it.
            return token.open(rw=True)

    def _login_refused(self) -> KmsUnavailable:
        return KmsUnavailable(f"login to PKCS#11 token {self.token_label!r} refused (check the user PIN)")

    def _unavailable(self, exc: Exception | None = None, message: str = "") -> KmsUnavailable:
        """The error for a token that cannot be used now; the session it happened on is dropped."""
        self._drop()
        # The PKCS#11 error class name (e.g. DeviceRemoved) is the diagnosis; it never holds data.
        return KmsUnavailable(message or f"PKCS#11 token {self.token_label!r} unavailable ({type(exc).__name__})")

    def _current_session(self) -> Any:
        if self._closed:
            raise KmsUnavailable("the PKCS#11 session is closed")
        if self._session is None or self._pid != os.getpid() or self._generation != _generation.get(
                self.module_path, 0):
            # Dropped after a failure, or meaningless here (a forked child, or a module another
            # instance re-initialised): log in afresh.
            self._session = None
            self._open()
        return self._session

    def _drop(self) -> None:
        """Forget a session that failed; the next call reconnects (see _open)."""
        if self._session is None:
            return
        self._release()
        self._failed_generation, self._handles = self._generation, {}

    def _release(self) -> None:
        session, self._session = self._session, None
        if session is None or self._pid != os.getpid() or self._generation != _generation.get(self.module_path, 0):
            return  # not ours to close: its handle may now name another session
        with _init_lock:
            count = _open_sessions.get(self._login_key, 0)
            if count > 0:
                _open_sessions[self._login_key] = count - 1
        try:
            session.close()
        except p11.PKCS11Error:
            pass  # already gone (token removed, module finalised): nothing left to release

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._release()

    # --- keys ----------------------------------------------------------------------------------

    def _versions(self) -> dict[int, Any]:
        session = self._current_session()
        keys: dict[int, Any] = {}
        try:
            for key in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: self.key_label}):
                key_id = key[Attribute.ID]
                if len(key_id) == _VERSION_ID_SIZE:
                    keys[int.from_bytes(key_id, "big")] = key
        except _UNAVAILABLE_ERRORS as exc:
            raise self._unavailable(exc) from None
        self._handles = dict(keys)
        return keys

    def _key(self, version: int) -> Any:
        self._current_session()  # a session that must be replaced takes its cached handles with it
        key = self._handles.get(version)
        if key is None:
            key = self._versions().get(version)
        if key is None:
            raise self._unavailable(
                message=f"KEK {self.key_label!r} version {version} is not on token {self.token_label!r}")
        return key

    def _generate(self, version: int) -> None:
        try:
            self._current_session().generate_key(
                KeyType.AES, 256, label=self.key_label, id=_version_id(version), store=True,
                capabilities=MechanismFlag(0), template=_KEK_TEMPLATE,
            )
        except _UNAVAILABLE_ERRORS as exc:
            raise self._unavailable(exc) from None
        except p11.PKCS11Error as exc:
            raise KmsError(f"the token refused to generate the KEK ({type(exc).__name__})") from None

    def _current_key(self) -> tuple[int, Any]:
        # A fresh object search on every wrap (rare: DEK creation and rotation only), so a rotation
        # made by another process is used at once; unwrap, the hot path, uses cached handles.
        versions = self._versions()
        if not versions:
            raise self._unavailable(
                message=f"no key labelled {self.key_label!r} on PKCS#11 token {self.token_label!r}")
        version = max(versions)
        return version, versions[version]

    @property
    def key_version(self) -> int:
        with self._lock:
            return self._current_key()[0]

    def rotate(self) -> int:
        with self._lock:
            version = max(self._versions(), default=0) + 1
            self._generate(version)
            return version

    def key_attributes(self, version: int | None = None) -> dict[str, bool]:
        """The protection attributes of a KEK version as the token reports them (for audits)."""
        names = ("SENSITIVE", "EXTRACTABLE", "ALWAYS_SENSITIVE", "NEVER_EXTRACTABLE", "WRAP", "UNWRAP", "TOKEN")
        with self._lock:
            key = self._key(self.key_version if version is None else version)
            return {name: bool(key[Attribute[name]]) for name in names}

    # --- wrap / unwrap -------------------------------------------------------------------------

    def wrap(self, dek: bytes, *, context: Mapping[str, str]) -> WrappedKey:
        aad = context_aad(context)
        plaintext = validate_dek(dek)
        with self._lock:
            version, key = self._current_key()
            header = crypto.build_header(version)
            nonce = os.urandom(crypto.NONCE_SIZE)
            try:
                body = key.encrypt(plaintext, mechanism=Mechanism.AES_GCM,
                                   mechanism_param=GCMParams(nonce, header + aad, crypto.TAG_SIZE * 8))
            except _UNAVAILABLE_ERRORS as exc:
                raise self._unavailable(exc) from None
            except p11.PKCS11Error as exc:
                raise KmsError(f"the token refused to wrap ({type(exc).__name__})") from None
        return WrappedKey(ciphertext=header + nonce + bytes(body), key_id=self.key_label, key_version=version)

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytes:
        aad = context_aad(context)
        blob = wrapped.ciphertext
        try:
            version = crypto.parse_header(blob).key_version
        except crypto.CiphertextError:
            raise KmsError("wrapped key is corrupt or not from the pkcs11 backend") from None
        if version != wrapped.key_version or wrapped.key_id != self.key_label:
            raise KmsError("wrapped key's id/version does not match this KEK or its ciphertext")
        header, nonce, body = crypto.split_ciphertext(blob)
        params = GCMParams(nonce, header + aad, crypto.TAG_SIZE * 8)
        with self._lock:
            try:
                return self._decrypt(self._key(version), body, params)
            except _STALE_HANDLE_ERRORS:
                # The cached handle outlived its object (key deleted, token re-initialised): look again.
                self._handles = {}
                try:
                    return self._decrypt(self._key(version), body, params)
                except _STALE_HANDLE_ERRORS as exc:
                    raise self._unavailable(exc) from None

    def _decrypt(self, key: Any, body: bytes, params: GCMParams) -> bytes:
        try:
            return bytes(key.decrypt(body, mechanism=Mechanism.AES_GCM, mechanism_param=params))
        except _STALE_HANDLE_ERRORS:
            raise
        except _UNAVAILABLE_ERRORS as exc:
            raise self._unavailable(exc) from None
        except p11.PKCS11Error:
            # SoftHSM2 reports a failed GCM tag as a bare GeneralError; every HSM words it differently.
            raise KmsError("cannot unwrap: wrong context, or the wrapped key was tampered with") from None
