"""The one settings module. Every value comes from the environment through typed readers.

Defaults fail closed: DEBUG is off, there is no SECRET_KEY outside development, ALLOWED_HOSTS is
explicit. AIEMAILY_ENV selects the profile:
  development  `make run`: embedded defaults (SQLite, filesystem broker), keys generated under var/
  test         production security settings, but plain HTTP and un-hashed static files for pytest
  production   everything strict; missing configuration stops the process
"""

from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from aiemaily.env import env_bool, env_choice, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("AIEMAILY_VAR_DIR", str(BASE_DIR / "var")))

AIEMAILY_ENV = env_choice("AIEMAILY_ENV", ("development", "test", "production"), "production")
DEVELOPMENT = AIEMAILY_ENV == "development"
PRODUCTION = AIEMAILY_ENV == "production"

DEBUG = env_bool("DEBUG", False)
if DEBUG and PRODUCTION:
    raise ImproperlyConfigured("DEBUG cannot be on when AIEMAILY_ENV=production")

# --- keys ---------------------------------------------------------------------------------------
_dev_keys = None
if DEVELOPMENT:
    from aiemaily.devkeys import ensure_dev_keys

    _dev_keys = ensure_dev_keys(VAR_DIR / "keys")


def _key(name: str, dev_file: str) -> str:
    value = env_secret(name)
    if value:
        return value
    if _dev_keys is not None:
        return _dev_keys[dev_file].read_text().strip()
    raise ImproperlyConfigured(f"{name} (or {name}_FILE) must be set when AIEMAILY_ENV={AIEMAILY_ENV}")


SECRET_KEY = _key("SECRET_KEY", "secret_key")
if len(SECRET_KEY) < 40:
    raise ImproperlyConfigured("SECRET_KEY must be at least 40 characters of random data")
JWT_PRIVATE_KEY = _key("JWT_PRIVATE_KEY", "jwt_private")
JWT_PUBLIC_KEY = _key("JWT_PUBLIC_KEY", "jwt_public")

# --- hosts and origins ----------------------------------------------------------------------------
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEVELOPMENT else [])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must list the host names this site answers to")
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000" if DEVELOPMENT else f"https://{ALLOWED_HOSTS[0]}")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# --- applications ---------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "corsheaders",
    "csp",
    "aiemaily.apps.AiemailyConfig",
    "aiemaily.idempotency",
    "accounts",
    "mail",
    "secrets_vault",
    "billing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "aiemaily.security.middleware.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "aiemaily.ownership.middleware.OwnerScopeMiddleware",
]

ROOT_URLCONF = "aiemaily.urls"
WSGI_APPLICATION = "aiemaily.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- databases ------------------------------------------------------------------------------------
# `default` connects as the application role: not superuser, not table owner, no BYPASSRLS.
# `maintenance` connects as a role that may bypass row-level security; it is used only through
# OwnedManager.unscoped(), which writes an audit line for every use.
# Migrations run as the owning role: run `manage.py migrate` with DATABASE_URL set to that role.
_database_url = env_str("DATABASE_URL")
if _database_url:
    _default_db = dj_database_url.parse(_database_url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0))
    _maintenance_url = env_str("DATABASE_MAINTENANCE_URL", _database_url)
    _maintenance_db = dj_database_url.parse(_maintenance_url)
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
    _maintenance_db = dict(_default_db)
DATABASES = {"default": _default_db, "maintenance": _maintenance_db}
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

# --- authentication -------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "home"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if AIEMAILY_ENV == "test":
    # PBKDF2's million rounds cost ~0.3 s per login; the suite logs in thousands of times.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_THROTTLE_MAX_FAILURES = env_int("LOGIN_THROTTLE_MAX_FAILURES", 5)
LOGIN_THROTTLE_IP_MAX_FAILURES = env_int("LOGIN_THROTTLE_IP_MAX_FAILURES", 50)
LOGIN_THROTTLE_WINDOW_SECONDS = env_int("LOGIN_THROTTLE_WINDOW_SECONDS", 15 * 60)

# --- cookies and transport security -----------------------------------------------------------------
_secure_transport = not DEVELOPMENT
SESSION_COOKIE_SECURE = _secure_transport
CSRF_COOKIE_SECURE = _secure_transport
# The __Host- prefix makes browsers refuse the cookie unless it is Secure, host-only and Path=/.
SESSION_COOKIE_NAME = "__Host-sessionid" if _secure_transport else "sessionid"
CSRF_COOKIE_NAME = "__Host-csrftoken" if _secure_transport else "csrftoken"
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Strict"
SESSION_COOKIE_AGE = 14 * 24 * 3600
SECURE_SSL_REDIRECT = env_bool("AIEMAILY_SSL_REDIRECT", PRODUCTION)
SECURE_HSTS_SECONDS = 0 if DEVELOPMENT else 63072000
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "strict-origin-when-cross-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if env_bool("AIEMAILY_BEHIND_PROXY", PRODUCTION):
    # Only nginx (deploy/nginx) talks to gunicorn, and it overwrites this header on every request.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


def _https_origins(name: str, values: list[str]) -> list[str]:
    # Each value becomes a CSP source or a CORS origin verbatim: refuse anything that could smuggle
    # a keyword (quotes), a second directive (;) or a wildcard into the header.
    for value in values:
        if not value.startswith("https://") and not DEVELOPMENT:
            raise ImproperlyConfigured(f"{name}: {value!r} must be an https:// origin")
        if any(ch in value for ch in " ;,'\"*") or value.count("/") > 2:
            raise ImproperlyConfigured(f"{name}: {value!r} must be a bare origin like https://api.example.com")
    return values


# report-uri (older browsers) and report-to (the Reporting API) both point at /csp-report;
# SecurityHeadersMiddleware sends the Reporting-Endpoints header that names the group.
AIEMAILY_CSP_REPORT_URI = "/csp-report"
AIEMAILY_CSP_REPORT_GROUP = "csp-endpoint"
# Named API hosts the browser code may call besides our own origin (comma list of https origins).
AIEMAILY_CSP_CONNECT_SRC = _https_origins("AIEMAILY_CSP_CONNECT_SRC", env_list("AIEMAILY_CSP_CONNECT_SRC", []))
# No 'strict-dynamic': a page that never reads request.csp_nonce gets no nonce in its header, and
# 'strict-dynamic' without a nonce would block even our own 'self' scripts. Scripts come from
# 'self' (static files) and may carry the per-response nonce; nothing inline, no eval, anywhere.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "script-src-attr": [NONE],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF, *AIEMAILY_CSP_CONNECT_SRC],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
        # Over plain HTTP (test, development) upgrading would break every subresource.
        "upgrade-insecure-requests": PRODUCTION,
        "report-uri": [AIEMAILY_CSP_REPORT_URI],
        "report-to": AIEMAILY_CSP_REPORT_GROUP,
    },
}

# CORS: default deny. Only the versioned API answers cross-origin requests, and only for the listed
# production and staging origins; webhooks, OAuth callbacks, admin, pages and /csp-report never do
# (the negative look-ahead keeps webhook/OAuth routes out even if they ever move under /api/v1/).
CORS_URLS_REGEX = r"^/api/v1/(?!(?:.*/)?(?:webhooks?|oauth)(?:/|$)).*$"
CORS_ALLOWED_ORIGINS = _https_origins("CORS_ALLOWED_ORIGINS", env_list("CORS_ALLOWED_ORIGINS", []))
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_METHODS = ("DELETE", "GET", "OPTIONS", "PATCH", "POST", "PUT")
CORS_ALLOW_HEADERS = ("accept", "authorization", "content-type", "idempotency-key")
CORS_EXPOSE_HEADERS = ("Idempotent-Replayed",)
CORS_PREFLIGHT_MAX_AGE = 600
# WhiteNoise sends "Access-Control-Allow-Origin: *" on static files by default; nothing needs that.
WHITENOISE_ALLOW_ALL_ORIGINS = False

# Headers SecurityHeadersMiddleware adds (Django sends HSTS, nosniff, Referrer-Policy and COOP).
# Only features Chromium recognises: an unknown one is a console error on every page.
PERMISSIONS_POLICY = {
    feature: "()"
    for feature in (
        "accelerometer", "autoplay", "camera", "display-capture", "encrypted-media",
        "fullscreen", "geolocation", "gyroscope", "hid", "idle-detection", "magnetometer", "microphone",
        "midi", "payment", "picture-in-picture", "publickey-credentials-get", "screen-wake-lock",
        "serial", "usb", "xr-spatial-tracking",
    )
}
CROSS_ORIGIN_RESOURCE_POLICY = "same-origin"

# /csp-report: at most AIEMAILY_CSP_REPORT_RATE_LIMIT reports per client IP per window, each body capped.
AIEMAILY_CSP_REPORT_MAX_BYTES = env_int("AIEMAILY_CSP_REPORT_MAX_BYTES", 16 * 1024)
AIEMAILY_CSP_REPORT_RATE_LIMIT = env_int("AIEMAILY_CSP_REPORT_RATE_LIMIT", 30)
AIEMAILY_CSP_REPORT_RATE_WINDOW_SECONDS = env_int("AIEMAILY_CSP_REPORT_RATE_WINDOW_SECONDS", 60)

# Outbound connections to user-supplied hosts (aiemaily.security.netguard): private, loopback and
# link-local destinations are refused unless listed here (host names, addresses or CIDR networks).
# Development allows this machine, so a local test mailbox works; nothing else does by default.
AIEMAILY_ALLOWED_PRIVATE_HOSTS = env_list(
    "AIEMAILY_ALLOWED_PRIVATE_HOSTS", ["127.0.0.1", "::1", "localhost"] if DEVELOPMENT else []
)

# The signed image proxy (/image-proxy) for "load images" in a message.
AIEMAILY_IMAGE_PROXY_MAX_BYTES = env_int("AIEMAILY_IMAGE_PROXY_MAX_BYTES", 5 * 1024 * 1024)
AIEMAILY_IMAGE_PROXY_TIMEOUT = env_int("AIEMAILY_IMAGE_PROXY_TIMEOUT", 10)

# --- static files ----------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles" if PRODUCTION else VAR_DIR / "static")))
if not PRODUCTION:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = not PRODUCTION
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- REST API --------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["aiemaily.api.authentication.OwnerBoundJWTAuthentication"],
    # Denied unless a view says who may use it (see tests/test_api_conventions.py).
    "DEFAULT_PERMISSION_CLASSES": ["aiemaily.api.permissions.DenyAll"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["aiemaily.api.parsers.SafeJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "aiemaily.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_str("API_THROTTLE_ANON", "60/min"),
        "user": env_str("API_THROTTLE_USER", "600/min"),
        "auth": env_str("API_THROTTLE_AUTH", "20/min"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

JWT_AUDIENCE = env_str("JWT_AUDIENCE", "aiemaily-api")
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("JWT_ACCESS_MINUTES", 5)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("JWT_REFRESH_DAYS", 7)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    # Ed25519: the web tier signs, anything that only verifies needs nothing but the public key.
    "ALGORITHM": "EdDSA",
    "SIGNING_KEY": JWT_PRIVATE_KEY,
    "VERIFYING_KEY": JWT_PUBLIC_KEY,
    "AUDIENCE": JWT_AUDIENCE,
    "ISSUER": SITE_URL,
    "LEEWAY": 0,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "sub",
    "TOKEN_OBTAIN_SERIALIZER": "accounts.api.serializers.TokenObtainSerializer",
    "TOKEN_REFRESH_SERIALIZER": "accounts.api.serializers.TokenRefreshSerializer",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Aiemaily API",
    "DESCRIPTION": "The Aiemaily REST API. Authenticate with `Authorization: Bearer <JWT>`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": r"/api/v1",
}

# --- Celery ----------------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
if not CELERY_BROKER_URL:
    if PRODUCTION:
        raise ImproperlyConfigured("CELERY_BROKER_URL must be set when AIEMAILY_ENV=production")
    CELERY_BROKER_URL = "filesystem://"
    _queue_folder = VAR_DIR / "celery" / "queue"
    _queue_folder.mkdir(parents=True, exist_ok=True)
    (VAR_DIR / "celery" / "control").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_folder),
        "data_folder_out": str(_queue_folder),
        "control_folder": str(VAR_DIR / "celery" / "control"),  # else kombu writes ./control
        "store_processed": False,
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]  # never pickle
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "sync"
CELERY_TASK_ROUTES = {
    "mail.tasks.idle_watch": {"queue": "idle"},  # exact names are matched before the globs below
    "secrets_vault.tasks.*": {"queue": "vault"},
    "mail.tasks.*": {"queue": "sync"},
    "aiemaily.tasks.*": {"queue": "sync"},
    "accounts.tasks.*": {"queue": "sync"},
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Workers log through LOGGING below (JSON + secret redaction), not through Celery's own handlers;
# Celery's stdout redirection would also feed our stderr handler back into itself and lose lines.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_REDIRECT_STDOUTS = False
CELERY_BEAT_SCHEDULE: dict = {
    # Expired idempotency keys are already treated as new; the hourly reaper only bounds the table.
    "idempotency-reap-expired": {"task": "aiemaily.idempotency.tasks.reap_expired", "schedule": 3600.0},
    # Polling fallback for mailboxes without a live IDLE watcher, and (re)starting those watchers.
    "mail-sync-due": {"task": "mail.tasks.sync_due", "schedule": float(env_int("AIEMAILY_SYNC_INTERVAL", 300))},
}

# --- trust zones: which process holds which key (DESIGN.md "Processes and trust zones") ----------
# AIEMAILY_PROCESS names the process. Each private key, the KEK and the DEK store are configured only
# for the process that may hold them; everywhere else they are None and the code that needs them
# refuses to run (secrets_vault.keystore.VaultNotHere). Public sealing keys are known to everyone.
AIEMAILY_PROCESS = env_choice("AIEMAILY_PROCESS", ("web", "vault", "sync", "beat", "idle", "test"), "web")
if AIEMAILY_PROCESS == "test" and PRODUCTION:
    raise ImproperlyConfigured("AIEMAILY_PROCESS=test plays every role and is refused in production")
_plays = {AIEMAILY_PROCESS} if AIEMAILY_PROCESS != "test" else {"web", "vault", "sync", "idle"}
if DEVELOPMENT:
    from aiemaily.devkeys import ensure_dev_vault_keys

    _dev_vault = ensure_dev_vault_keys(VAR_DIR / "keys")
    for _name, _path in _dev_vault["env"].items():
        _role = "vault" if _name.startswith(("AIEMAILY_VAULT_PRIVATE", "AIEMAILY_KMS_LOCAL")) else (
            "sync" if _name.startswith("AIEMAILY_SYNC_PRIVATE") else "all")
        if _role == "all" or _role in _plays or (_role == "sync" and "idle" in _plays):
            __import__("os").environ.setdefault(_name, str(_path))


def _public_key(name: str) -> str | None:
    value = env_secret(name)
    if value is None and PRODUCTION:
        raise ImproperlyConfigured(f"{name} (or {name}_FILE) must be set")
    return value


AIEMAILY_VAULT_PUBLIC_KEY = _public_key("AIEMAILY_VAULT_PUBLIC_KEY")
AIEMAILY_SYNC_PUBLIC_KEY = _public_key("AIEMAILY_SYNC_PUBLIC_KEY")
AIEMAILY_VAULT_PRIVATE_KEY = env_secret("AIEMAILY_VAULT_PRIVATE_KEY") if "vault" in _plays else None
AIEMAILY_SYNC_PRIVATE_KEY = env_secret("AIEMAILY_SYNC_PRIVATE_KEY") if _plays & {"sync", "idle"} else None

AIEMAILY_KMS = env_choice("AIEMAILY_KMS", ("local", "pkcs11", "aws"), "local")
AIEMAILY_KMS_CONFIG = None
if "vault" in _plays:
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
if _plays & {"web", "sync", "idle"}:
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
AIEMAILY_STORAGE_KEY_CACHE_SECONDS = env_int("AIEMAILY_STORAGE_KEY_CACHE_SECONDS", 300)
# A send still `sending` after this long is treated as interrupted and reconciled via the Sent folder.
AIEMAILY_SEND_STALE_SECONDS = env_int("AIEMAILY_SEND_STALE_SECONDS", 600)
# Extra CA certificates trusted for IMAP/SMTP TLS (a company CA; the test harness's CA).
AIEMAILY_MAIL_CA_BUNDLE = env_str("AIEMAILY_MAIL_CA_BUNDLE")
# OAuth clients. Web builds consent URLs (client ids are public); worker-vault exchanges codes and
# refreshes tokens, so only it reads the client secrets (mail/oauth.py, mail/providers/*_oauth.py).
GOOGLE_OAUTH_CLIENT_ID = env_str("GOOGLE_OAUTH_CLIENT_ID")
GOOGLE_OAUTH_CLIENT_SECRET = env_secret("GOOGLE_OAUTH_CLIENT_SECRET") if "vault" in _plays else None
GOOGLE_AUTH_URI = env_str("GOOGLE_AUTH_URI", "https://accounts.google.com/o/oauth2/v2/auth")
GOOGLE_TOKEN_URI = env_str("GOOGLE_TOKEN_URI", "https://oauth2.googleapis.com/token")
GOOGLE_REVOKE_URI = env_str("GOOGLE_REVOKE_URI", "https://oauth2.googleapis.com/revoke")
GOOGLE_USERINFO_URI = env_str("GOOGLE_USERINFO_URI", "https://openidconnect.googleapis.com/v1/userinfo")
MICROSOFT_CLIENT_ID = env_str("MICROSOFT_CLIENT_ID")
MICROSOFT_CLIENT_SECRET = env_secret("MICROSOFT_CLIENT_SECRET") if "vault" in _plays else None
MICROSOFT_AUTHORITY = env_str("MICROSOFT_AUTHORITY", "https://login.microsoftonline.com/common").rstrip("/")
for _name in ("GOOGLE_AUTH_URI", "GOOGLE_TOKEN_URI", "GOOGLE_REVOKE_URI", "GOOGLE_USERINFO_URI", "MICROSOFT_AUTHORITY"):
    # Codes, verifiers and tokens travel to these: never over plain HTTP, not even in development.
    if not globals()[_name].startswith("https://"):
        raise ImproperlyConfigured(f"{_name} must be an https:// URL")
# Extra CA certificates trusted for the OAuth endpoints above (the test harness's CA).
AIEMAILY_OAUTH_CA_BUNDLE = env_str("AIEMAILY_OAUTH_CA_BUNDLE")
# Mail APIs worker-sync calls with leased access tokens (mail/sync_gmail.py, mail/sync_graph.py).
GMAIL_API_BASE = env_str("GMAIL_API_BASE", "https://gmail.googleapis.com").rstrip("/")
GRAPH_API_BASE = env_str("GRAPH_API_BASE", "https://graph.microsoft.com/v1.0").rstrip("/")
for _name in ("GMAIL_API_BASE", "GRAPH_API_BASE"):
    # Access tokens travel to these as bearer tokens: never over plain HTTP.
    if not globals()[_name].startswith("https://"):
        raise ImproperlyConfigured(f"{_name} must be an https:// URL")
# Extra CA certificates trusted for the mail APIs above (the test harness's CA); None: the system's.
AIEMAILY_PROVIDER_CA_BUNDLE = env_str("AIEMAILY_PROVIDER_CA_BUNDLE")

# --- logging ---------------------------------------------------------------------------------------
LOG_FORMAT = env_choice("LOG_FORMAT", ("json", "text"), "text" if DEVELOPMENT else "json")
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "aiemaily.logging.RedactSecretsFilter"}},
    "formatters": {
        "json": {"()": "aiemaily.logging.JsonFormatter"},
        "text": {"()": "aiemaily.logging.RedactingTextFormatter",
                 "format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["redact"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "celery": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # These libraries log authorization codes, PKCE verifiers and token bodies at DEBUG.
        "msal": {"level": "WARNING"},
        "oauthlib": {"level": "WARNING"},
        "requests_oauthlib": {"level": "WARNING"},
    },
}
DEFAULT_EXCEPTION_REPORTER = "aiemaily.logging.SecretRedactingExceptionReporter"
DEFAULT_EXCEPTION_REPORTER_FILTER = "aiemaily.logging.SecretRedactingExceptionReporterFilter"
