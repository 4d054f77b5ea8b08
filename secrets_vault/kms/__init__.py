"""KMS backends for the credentials KEK, and the factory that builds the configured one.

    kms = kms_from_settings({"backend": "local", "key_dir": "/var/lib/aiemaily/kek"})
    wrapped = kms.wrap(dek, context={"owner": str(owner_id)})
    dek = kms.unwrap(wrapped, context={"owner": str(owner_id)})

Settings are a plain dict so Django settings, a management command or a test can all supply them.
The factory builds exactly the backend named: if it cannot be reached the error propagates, and
nothing weaker (a local key, no encryption) is ever substituted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from secrets_vault.kms.base import (
    KeyEncryptionService,
    KmsConfigurationError,
    KmsError,
    KmsUnavailable,
    WrappedKey,
)

__all__ = [
    "BACKENDS",
    "KeyEncryptionService",
    "KmsConfigurationError",
    "KmsError",
    "KmsUnavailable",
    "WrappedKey",
    "kms_from_settings",
]

# backend -> (required keys, optional keys). Unknown keys are refused: a typo such as "creat" must
# not silently change behaviour.
BACKENDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "local": (frozenset({"key_dir"}), frozenset({"create"})),
    "pkcs11": (frozenset({"module", "token_label", "user_pin", "key_label"}), frozenset({"create"})),
    "aws": (
        frozenset({"key_id"}),
        frozenset({"region", "endpoint_url", "profile", "create", "connect_timeout", "read_timeout", "max_attempts"}),
    ),
}


def _build_local(params: dict[str, Any]) -> KeyEncryptionService:
    from secrets_vault.kms.local import LocalKms  # each backend is imported only when chosen

    return LocalKms(params["key_dir"], create=params.get("create", False))


def _build_pkcs11(params: dict[str, Any]) -> KeyEncryptionService:
    # Imported only when chosen: processes on other backends need no PKCS#11 library at all.
    from secrets_vault.kms.pkcs11 import Pkcs11Kms

    return Pkcs11Kms(params["module"], params["token_label"], params["user_pin"], params["key_label"],
                     create=params.get("create", False))


def _build_aws(params: dict[str, Any]) -> KeyEncryptionService:
    from secrets_vault.kms.aws import AwsKms  # boto3 is loaded only where AWS KMS is chosen

    options = {name: params[name] for name in BACKENDS["aws"][1] if name in params}
    return AwsKms(params["key_id"], **options)


_BUILDERS: dict[str, Callable[[dict[str, Any]], KeyEncryptionService]] = {
    "local": _build_local,
    "pkcs11": _build_pkcs11,
    "aws": _build_aws,
}


def _check(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if not isinstance(config, Mapping):
        raise KmsConfigurationError("KMS settings must be a dict")
    backend = config.get("backend")
    if backend not in BACKENDS:
        raise KmsConfigurationError(f"unknown KMS backend {backend!r}; expected one of {sorted(BACKENDS)}")
    params = {key: value for key, value in config.items() if key != "backend"}
    required, optional = BACKENDS[backend]
    # Only key names ever appear in these messages: values may be PINs.
    missing = sorted(required - params.keys())
    if missing:
        raise KmsConfigurationError(f"the {backend} KMS backend needs {', '.join(missing)}")
    unknown = sorted(params.keys() - required - optional)
    if unknown:
        raise KmsConfigurationError(f"unknown setting(s) for the {backend} KMS backend: {', '.join(unknown)}")
    if not isinstance(params.get("create", False), bool):
        raise KmsConfigurationError("KMS setting 'create' must be true or false")
    empty = sorted(key for key in required if params[key] in (None, ""))
    if empty:
        raise KmsConfigurationError(f"the {backend} KMS backend needs non-empty {', '.join(empty)}")
    return backend, params


def kms_from_settings(config: Mapping[str, Any]) -> KeyEncryptionService:
    """Build the KMS backend `config["backend"]` names, or raise; never fall back to another one.

    Raises KmsConfigurationError for bad settings and KmsUnavailable when the backend is configured
    correctly but cannot be used (missing key files, HSM or token absent, endpoint unreachable).
    """
    backend, params = _check(config)
    return _BUILDERS[backend](params)
