"""The project's core: the environment profile, the process, installed apps, middleware, templates,
static files."""

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from aiemaily.env import env_bool, env_choice, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent  # the repository (aiemaily/settings/core.py)
VAR_DIR = Path(env_str("AIEMAILY_VAR_DIR", str(BASE_DIR / "var")))

AIEMAILY_ENV = env_choice("AIEMAILY_ENV", ("development", "test", "production"), "production")
DEVELOPMENT = AIEMAILY_ENV == "development"
PRODUCTION = AIEMAILY_ENV == "production"

DEBUG = env_bool("DEBUG", False)
# The process's trust zone (DESIGN.md "Processes and trust zones"); see "trust zones" below.
AIEMAILY_PROCESS = env_choice(
    "AIEMAILY_PROCESS", ("web", "vault", "sync", "beat", "idle", "ai", "maintenance", "admin", "test"), "web")
# The only processes that hold the BYPASSRLS maintenance role: they parse no user input or mail.
MAINTENANCE_PROCESSES = ("maintenance", "admin", "test")
if DEBUG and PRODUCTION:
    raise ImproperlyConfigured("DEBUG cannot be on when AIEMAILY_ENV=production")

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
    "django_otp",
    "django_otp.plugins.otp_totp",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "corsheaders",
    "csp",
    "aiemaily.apps.AiemailyConfig",
    "aiemaily.idempotency",
    "aiemaily.webhooks",
    "aiemaily.ops",  # health, readiness, metrics (no models; listed so Celery finds its tasks)
    "accounts",
    "mail",
    "secrets_vault",
    "billing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "aiemaily.security.middleware.SecurityHeadersMiddleware",
    # Webhook routes stop here: headers above, their view below, nothing for browsers in between.
    "aiemaily.webhooks.middleware.WebhookFastPathMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "aiemaily.ownership.middleware.OwnerScopeMiddleware",
    # After the owner is bound: ends a session its owner signed out from elsewhere (accounts/middleware.py).
    "accounts.middleware.SessionLedgerMiddleware",
]

# The admin process serves only the staff admin (aiemaily/admin_urls.py); every other process the site.
ROOT_URLCONF = "aiemaily.admin_urls" if AIEMAILY_PROCESS == "admin" else "aiemaily.urls"
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
