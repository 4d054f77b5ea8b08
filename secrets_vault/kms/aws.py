"""The `aws` KMS backend: AWS KMS (or anything speaking its API, such as moto's server in tests).

Wrap is kms:Encrypt of the DEK under a symmetric KMS key with the context as EncryptionContext, so
AWS itself refuses a Decrypt with any other context. Unwrap is kms:Decrypt with that context and
the KeyId recorded at wrap time (so a ciphertext naming some other key is rejected).

Versions: configure `key_id` as an alias ("alias/aiemaily-kek"). Each KMS key behind it carries a
tag `aiemaily:kek-version` = N. rotate() creates key N+1 and points the alias at it; KMS ciphertexts
name their key, so everything wrapped under an older key keeps decrypting. (AWS's own automatic
rotation also works, transparently, but is invisible to key_version.)
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from secrets_vault.kms.base import (
    KeyEncryptionService,
    KmsConfigurationError,
    KmsError,
    KmsUnavailable,
    WrappedKey,
    validate_context,
    validate_dek,
)

__all__ = ["AwsKms"]

VERSION_TAG = "aiemaily:kek-version"
# Error codes that say "the service or the key cannot be used now", not "your request is wrong".
_UNAVAILABLE_CODES = frozenset({
    "ThrottlingException",
    "RequestLimitExceeded",
    "KMSInternalException",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "DependencyTimeoutException",
    "KMSInvalidStateException",
    "DisabledException",
    "KeyUnavailableException",
    "NotFoundException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
})


def _translate(exc: Exception, action: str) -> KmsError:
    """Map a botocore failure to KmsUnavailable/KmsError, keeping only the error code and action.

    AWS error messages do not contain plaintext, but they are not ours to vouch for: the code is
    enough to diagnose, and it is all that reaches logs.
    """
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "Unknown")
        if code in _UNAVAILABLE_CODES:
            return KmsUnavailable(f"AWS KMS {action} failed: {code}")
        if code in {"InvalidCiphertextException", "IncorrectKeyException", "AccessDeniedException"}:
            # Real AWS says InvalidCiphertext for a wrong context or tampering; moto may say AccessDenied.
            return KmsError(f"AWS KMS {action} refused ({code})")
        return KmsError(f"AWS KMS {action} failed: {code}")
    if isinstance(exc, ParamValidationError):
        # botocore rejected the request before sending it (e.g. an empty ciphertext): bad input.
        return KmsError(f"AWS KMS {action} request is invalid")
    if isinstance(exc, BotoConnectionError):
        return KmsUnavailable(f"AWS KMS endpoint unreachable during {action} ({type(exc).__name__})")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return KmsUnavailable(f"no AWS credentials available for {action}")
    return KmsUnavailable(f"AWS KMS {action} failed ({type(exc).__name__})")


class AwsKms(KeyEncryptionService):
    """A symmetric AWS KMS key (or alias); `create=True` creates key and alias when the alias is missing.

    Credentials come from the standard boto3 chain (environment, profile, instance role), never
    from settings passed here.
    """

    backend = "aws"

    def __init__(self, key_id: str, *, region: str | None = None, endpoint_url: str | None = None,
                 profile: str | None = None, create: bool = False, connect_timeout: float = 5.0,
                 read_timeout: float = 10.0, max_attempts: int = 3) -> None:
        self.key_id = key_id
        self.endpoint_url = endpoint_url
        self._versions: dict[str, int] = {}  # key ARN -> version tag (Aiemaily never retags a key)
        self._lock = threading.Lock()
        config = Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                        retries={"mode": "standard", "max_attempts": max_attempts})
        try:
            session = boto3.Session(profile_name=profile, region_name=region)
            self._client = session.client("kms", endpoint_url=endpoint_url, config=config)
        except NoRegionError:
            raise KmsConfigurationError("the aws KMS backend needs a region") from None
        except BotoCoreError as exc:
            raise KmsConfigurationError(f"cannot configure the AWS KMS client ({type(exc).__name__})") from None
        # Resolve now: a wrong endpoint, key or credential fails at start-up, not on a user's request.
        if self._describe() is None:
            if not create:
                raise KmsUnavailable(f"AWS KMS key {key_id!r} not found")
            self._create_key(1, alias_exists=False)

    def __repr__(self) -> str:
        return f"AwsKms(key_id={self.key_id!r}, endpoint_url={self.endpoint_url!r})"

    # --- AWS calls -----------------------------------------------------------------------------

    def _call(self, action: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self._client, action)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, action) from None

    def _resolve(self) -> str:
        """The ARN of the key `key_id` currently names (an alias follows rotation)."""
        return self._call("describe_key", KeyId=self.key_id)["KeyMetadata"]["Arn"]

    def _describe(self) -> dict[str, Any] | None:
        """The key's metadata, or None when the key/alias does not exist (other failures raise)."""
        try:
            return self._client.describe_key(KeyId=self.key_id)["KeyMetadata"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NotFoundException":
                return None
            raise _translate(exc, "describe_key") from None
        except BotoCoreError as exc:
            raise _translate(exc, "describe_key") from None

    def _version_of(self, key_arn: str) -> int:
        with self._lock:
            cached = self._versions.get(key_arn)
        if cached is not None:
            return cached
        tags = self._call("list_resource_tags", KeyId=key_arn).get("Tags", [])
        values = [tag["TagValue"] for tag in tags if tag.get("TagKey") == VERSION_TAG]
        # A key created outside Aiemaily has no tag: it is version 1 of its own history.
        version = int(values[0]) if values and values[0].isdigit() else 1
        with self._lock:
            self._versions[key_arn] = version
        return version

    def _create_key(self, version: int, *, alias_exists: bool) -> None:
        if not self.key_id.startswith("alias/"):
            raise KmsError("creating or rotating an AWS KMS key needs key_id to be an alias (alias/...)")
        metadata = self._call(
            "create_key",
            Description=f"Aiemaily credentials KEK, version {version}",
            KeyUsage="ENCRYPT_DECRYPT",
            KeySpec="SYMMETRIC_DEFAULT",
            Tags=[{"TagKey": VERSION_TAG, "TagValue": str(version)}],
        )["KeyMetadata"]
        action = "update_alias" if alias_exists else "create_alias"
        self._call(action, AliasName=self.key_id, TargetKeyId=metadata["KeyId"])

    # --- interface -----------------------------------------------------------------------------

    @property
    def key_version(self) -> int:
        return self._version_of(self._resolve())

    def wrap(self, dek: bytes, *, context: Mapping[str, str]) -> WrappedKey:
        response = self._call("encrypt", KeyId=self.key_id, Plaintext=validate_dek(dek),
                              EncryptionContext=validate_context(context))
        key_arn = response["KeyId"]  # the key actually used, even if the alias moved meanwhile
        return WrappedKey(ciphertext=response["CiphertextBlob"], key_id=key_arn, key_version=self._version_of(key_arn))

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytes:
        self._check_version(wrapped)
        response = self._call("decrypt", CiphertextBlob=wrapped.ciphertext, KeyId=wrapped.key_id,
                              EncryptionContext=validate_context(context))
        return response["Plaintext"]

    def rewrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> WrappedKey:
        """kms:ReEncrypt: the DEK moves to the current key without ever leaving AWS KMS."""
        self._check_version(wrapped)
        ctx = validate_context(context)
        response = self._call("re_encrypt", CiphertextBlob=wrapped.ciphertext, SourceKeyId=wrapped.key_id,
                              SourceEncryptionContext=ctx, DestinationKeyId=self.key_id,
                              DestinationEncryptionContext=ctx)
        key_arn = response["KeyId"]
        return WrappedKey(ciphertext=response["CiphertextBlob"], key_id=key_arn, key_version=self._version_of(key_arn))

    def _check_version(self, wrapped: WrappedKey) -> None:
        # AWS ignores our version number; keep the record honest the way the other backends do.
        if wrapped.key_version != self._version_of(wrapped.key_id):
            raise KmsError("wrapped key's version does not match the KMS key that made it")

    def rotate(self) -> int:
        """Create a new KMS key tagged with the next version and move the alias to it."""
        version = self.key_version + 1
        self._create_key(version, alias_exists=True)
        return version

    def close(self) -> None:
        self._client.close()
