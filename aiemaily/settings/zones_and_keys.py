"""Trust zones: which process holds which key, the KMS backends, the vault and key-store databases."""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from aiemaily.env import env_choice, env_int, env_secret, env_str
from aiemaily.settings.core import AIEMAILY_PROCESS, DEVELOPMENT, PRODUCTION, VAR_DIR
from aiemaily.settings.databases import DATABASE_PGBOUNCER, DATABASES

# --- trust zones: which process holds which key (DESIGN.md "Processes and trust zones") ----------
# AIEMAILY_PROCESS names the process. Each private key, the KEK and the DEK store are configured only
# for the process that may hold them; everywhere else they are None and the code that needs them
# refuses to run (secrets_vault.keystore.VaultNotHere). Public sealing keys are known to everyone.
if AIEMAILY_PROCESS == "test" and PRODUCTION:
    raise ImproperlyConfigured("AIEMAILY_PROCESS=test plays every role and is refused in production")
# The roles this process plays; lower case, so not a Django setting (providers, billing and the
# assistant's modules read it to decide which of their secrets this process may hold).
plays = {AIEMAILY_PROCESS} if AIEMAILY_PROCESS != "test" else {"web", "vault", "sync", "idle", "ai"}
if DEVELOPMENT:  # the key generator is imported only where it may run
    from aiemaily.devkeys import ensure_dev_vault_keys

    _dev_vault = ensure_dev_vault_keys(VAR_DIR / "keys")
    for _name, _path in _dev_vault["env"].items():
        _role = "vault" if _name.startswith(("AIEMAILY_VAULT_PRIVATE", "AIEMAILY_KMS_LOCAL")) else (
            "sync" if _name.startswith("AIEMAILY_SYNC_PRIVATE") else
            "ai" if _name.startswith("AIEMAILY_AI_PRIVATE") else "all")
        if _role == "all" or _role in plays or (_role == "sync" and "idle" in plays):
            os.environ.setdefault(_name, str(_path))


def _public_key(name: str) -> str | None:
    value = env_secret(name)
    if value is None and PRODUCTION:
        raise ImproperlyConfigured(f"{name} (or {name}_FILE) must be set")
    return value


AIEMAILY_VAULT_PUBLIC_KEY = _public_key("AIEMAILY_VAULT_PUBLIC_KEY")
AIEMAILY_SYNC_PUBLIC_KEY = _public_key("AIEMAILY_SYNC_PUBLIC_KEY")
AIEMAILY_VAULT_PRIVATE_KEY = env_secret("AIEMAILY_VAULT_PRIVATE_KEY") if "vault" in plays else None
AIEMAILY_SYNC_PRIVATE_KEY = env_secret("AIEMAILY_SYNC_PRIVATE_KEY") if plays & {"sync", "idle"} else None
# worker-ai's own lease key pair: BYOK keys reach it only re-sealed to this public key.
AIEMAILY_AI_PUBLIC_KEY = _public_key("AIEMAILY_AI_PUBLIC_KEY")
AIEMAILY_AI_PRIVATE_KEY = env_secret("AIEMAILY_AI_PRIVATE_KEY") if "ai" in plays else None

AIEMAILY_KMS = env_choice("AIEMAILY_KMS", ("local", "pkcs11", "aws"), "local")
AIEMAILY_KMS_CONFIG = None
if "vault" in plays:
    if AIEMAILY_KMS == "local":
        # Outside production the first KEK version is created on first use; production creates it
        # on purpose with `manage.py vault_rotate_kek --init`.
        AIEMAILY_KMS_CONFIG = {"backend": "local", "key_dir": env_str("AIEMAILY_KMS_LOCAL_DIR"),
                               "create": not PRODUCTION}
    elif AIEMAILY_KMS == "pkcs11":
        AIEMAILY_KMS_CONFIG = {
            "backend": "pkcs11",
            "module": env_str("AIEMAILY_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so"),
            "token_label": env_str("AIEMAILY_PKCS11_TOKEN"),
            "user_pin": env_secret("AIEMAILY_PKCS11_PIN"),
            "key_label": env_str("AIEMAILY_PKCS11_KEY_LABEL", "aiemaily-kek"),
        }
    else:
        AIEMAILY_KMS_CONFIG = {
            "backend": "aws",
            "key_id": env_str("AIEMAILY_AWS_KMS_KEY_ID"),
            "region": env_str("AWS_REGION", "us-east-1"),
            "endpoint_url": env_str("AIEMAILY_AWS_KMS_ENDPOINT"),
        }
    _vault_url = env_str("VAULT_DATABASE_URL")
    if _vault_url:
        DATABASES["vault"] = dj_database_url.parse(_vault_url)
    elif not PRODUCTION:
        DATABASES["vault"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "vault.sqlite3"}
    else:
        raise ImproperlyConfigured("VAULT_DATABASE_URL must be set for the vault process")
if DATABASE_PGBOUNCER:  # see DATABASES above: every PostgreSQL alias, the vault's included
    for _db in DATABASES.values():
        if "postgresql" in str(_db.get("ENGINE", "")):
            _db["DISABLE_SERVER_SIDE_CURSORS"] = True
            _db.setdefault("OPTIONS", {})["prepare_threshold"] = None
# DEK cache in worker-vault: like the AWS Encryption SDK's caching manager, bounded in age and uses.
AIEMAILY_DEK_CACHE_SECONDS = env_int("AIEMAILY_DEK_CACHE_SECONDS", 300)
AIEMAILY_DEK_CACHE_USES = env_int("AIEMAILY_DEK_CACHE_USES", 1000)
AIEMAILY_LEASE_SECONDS = env_int("AIEMAILY_LEASE_SECONDS", 300)
# Message bodies: encrypted objects (mail/blobstore.py). The storage KMS key is distinct from the
# credentials KEK; web, sync and the IDLE watcher may use it (read mail), the vault does not need it.
AIEMAILY_STORAGE = env_choice("AIEMAILY_STORAGE", ("local", "s3"), "local")
AIEMAILY_OBJECTS_DIR = Path(env_str("AIEMAILY_OBJECTS_DIR", str(VAR_DIR / "objects")))
AIEMAILY_S3_BUCKET = env_str("AIEMAILY_S3_BUCKET")
AIEMAILY_S3_ENDPOINT = env_str("AIEMAILY_S3_ENDPOINT")
AIEMAILY_STORAGE_KMS = env_choice("AIEMAILY_STORAGE_KMS", ("local", "aws"), "local")
AIEMAILY_STORAGE_KMS_CONFIG = None
if plays & {"web", "sync", "idle", "ai"}:
    if AIEMAILY_STORAGE_KMS == "local":
        _storage_kek = env_str("AIEMAILY_STORAGE_KMS_LOCAL_DIR", str(VAR_DIR / "keys" / "storage-kek")
                               if not PRODUCTION else None)
        if _storage_kek is None:
            raise ImproperlyConfigured("AIEMAILY_STORAGE_KMS_LOCAL_DIR must be set")
        AIEMAILY_STORAGE_KMS_CONFIG = {"backend": "local", "key_dir": _storage_kek, "create": not PRODUCTION}
    else:
        AIEMAILY_STORAGE_KMS_CONFIG = {"backend": "aws", "key_id": env_str("AIEMAILY_STORAGE_AWS_KMS_KEY_ID"),
                                       "region": env_str("AWS_REGION", "us-east-1"),
                                       "endpoint_url": env_str("AIEMAILY_AWS_KMS_ENDPOINT")}
    # The storage-key store: per-user storage keys (wrapped by the storage KMS key) in their own
    # database, never in the main one, so shredding them reaches bodies and metadata in backups of
    # the main database and the object store (secrets_vault/routers.py, docs/operations.md).
    _keys_url = env_str("KEYS_DATABASE_URL")
    if _keys_url:
        DATABASES["keys"] = dj_database_url.parse(_keys_url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0))
    elif not PRODUCTION:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        DATABASES["keys"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "keys.sqlite3",
                             "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;",
                                         "transaction_mode": "IMMEDIATE"}}
    else:
        raise ImproperlyConfigured("KEYS_DATABASE_URL must be set for web, sync, idle and ai")
AIEMAILY_STORAGE_KEY_CACHE_SECONDS = env_int("AIEMAILY_STORAGE_KEY_CACHE_SECONDS", 300)
