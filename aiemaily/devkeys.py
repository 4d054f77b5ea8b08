"""Development keys under var/: generated once, readable only by the current user, never committed.

Production supplies every key through the environment (or NAME_FILE); this module is used only when
AIEMAILY_ENV=development and by the test harness.
"""

import base64
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def ensure_dev_keys(key_dir: Path) -> dict[str, Path]:
    """Create the development secret key and JWT signing key pair if they do not exist yet."""
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = {
        "secret_key": key_dir / "django-secret-key",
        "jwt_private": key_dir / "jwt-ed25519.pem",
        "jwt_public": key_dir / "jwt-ed25519.pub.pem",
    }
    if not paths["secret_key"].exists():
        _write_private(paths["secret_key"], secrets.token_urlsafe(50).encode())
    if not paths["jwt_private"].exists():
        private = Ed25519PrivateKey.generate()
        _write_private(
            paths["jwt_private"],
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
        paths["jwt_public"].write_bytes(
            private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return paths


def ensure_dev_vault_keys(key_dir: Path) -> dict:
    """Sealing key pairs for the vault, the sync pool and the ai pool, and the local KEK directory.

    Returns {"env": {ENV_NAME_FILE: path}}; settings hand each private key only to the process
    whose AIEMAILY_PROCESS may hold it.
    """
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = {}
    for role in ("vault", "sync", "ai"):
        private_path = key_dir / f"{role}-x25519.key"
        public_path = key_dir / f"{role}-x25519.pub"
        if not private_path.exists():
            private = X25519PrivateKey.generate()
            raw = private.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            _write_private(private_path, base64.b64encode(raw))
            public_path.write_bytes(base64.b64encode(public))
        env[f"AIEMAILY_{role.upper()}_PRIVATE_KEY_FILE"] = private_path
        env[f"AIEMAILY_{role.upper()}_PUBLIC_KEY_FILE"] = public_path
    kek_dir = key_dir / "kek"
    kek_dir.mkdir(exist_ok=True, mode=0o700)
    env["AIEMAILY_KMS_LOCAL_DIR"] = kek_dir
    return {"env": env}
