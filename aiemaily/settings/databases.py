"""Databases (the application role, and the maintenance role only where it is held) and the cache."""

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from aiemaily.env import env_bool, env_int, env_str
from aiemaily.settings.core import AIEMAILY_PROCESS, MAINTENANCE_PROCESSES, PRODUCTION, VAR_DIR

# --- databases ------------------------------------------------------------------------------------
# `default` connects as the application role: not superuser, not table owner, no BYPASSRLS.
# `maintenance` connects as a role that may bypass row-level security; it is used only through
# OwnedManager.unscoped(), which writes an audit line for every use. Only the processes that parse
# no user input hold it (worker-maintenance, and the staff admin on its own bind): web, worker-sync,
# worker-ai and idle never read DATABASE_MAINTENANCE_URL, so they have no `maintenance` alias at all.
# Migrations run as the owning role: run `manage.py migrate` with DATABASE_URL set to that role.
_holds_maintenance = AIEMAILY_PROCESS in MAINTENANCE_PROCESSES
_database_url = env_str("DATABASE_URL")
if _database_url:
    # Persistent connections save a connect per request (to PgBouncer or PostgreSQL); the owner binding
    # is transaction-local, so a reused connection carries no owner. Health checks drop a connection
    # that died with a database restart before it is reused.
    _default_db = dj_database_url.parse(_database_url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
                                        conn_health_checks=True)
    _maintenance_url = env_str("DATABASE_MAINTENANCE_URL") if _holds_maintenance else None
    if _holds_maintenance and not _maintenance_url and PRODUCTION:
        raise ImproperlyConfigured(f"DATABASE_MAINTENANCE_URL must be set for AIEMAILY_PROCESS={AIEMAILY_PROCESS}")
    _maintenance_db = dj_database_url.parse(_maintenance_url or _database_url)
elif PRODUCTION:
    raise ImproperlyConfigured("DATABASE_URL must be set when AIEMAILY_ENV=production")
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    _default_db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR_DIR / "aiemaily.sqlite3",
        # WAL lets the web process read while a worker writes.
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"},
    }
    # One file: the maintenance alias is the same database, in tests too.
    _maintenance_db = dict(_default_db, TEST={"MIRROR": "default"})
DATABASES = {"default": _default_db}
if _holds_maintenance:
    DATABASES["maintenance"] = _maintenance_db
# Behind PgBouncer in transaction pooling mode a server connection changes hands between transactions,
# so nothing may outlive one: no server-side cursors (Django's advice for transaction pooling) and no
# prepared statements (Django binds client-side by default; this keeps it so). Owner binding is
# transaction-local already (aiemaily/ownership/binding.py; tests/project/test_pgbouncer.py).
DATABASE_PGBOUNCER = env_bool("DATABASE_PGBOUNCER", False)
DATABASE_ROUTERS = ["secrets_vault.routers.VaultRouter", "aiemaily.ownership.routers.MaintenanceRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AIEMAILY_DB_APP_ROLE = env_str("AIEMAILY_DB_APP_ROLE", "aiemaily_app")
AIEMAILY_DB_MAINTENANCE_ROLE = env_str("AIEMAILY_DB_MAINTENANCE_ROLE", "aiemaily_maintenance")

# --- cache (login throttling, DRF throttling) -------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", ""),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
