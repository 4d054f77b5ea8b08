"""Security: signing keys, hosts, authentication, cookies and transport, CSP, CORS, and the limits
of the outbound guard and the image proxy."""

from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from aiemaily.env import env_bool, env_int, env_list, env_secret, env_str
from aiemaily.settings.core import AIEMAILY_ENV, AIEMAILY_PROCESS, DEVELOPMENT, PRODUCTION, VAR_DIR

# --- keys ---------------------------------------------------------------------------------------
_dev_keys = None
if DEVELOPMENT:  # the key generator is imported only where it may run
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
# Only web issues API tokens (the admin process serves no API; tests play web): no other process
# reads the signing key, not even when its environment holds it by mistake (docs/deployment.md).
JWT_SIGNING_PROCESSES = ("web", "test")
JWT_PRIVATE_KEY = _key("JWT_PRIVATE_KEY", "jwt_private") if AIEMAILY_PROCESS in JWT_SIGNING_PROCESSES else None
JWT_PUBLIC_KEY = _key("JWT_PUBLIC_KEY", "jwt_public")

# --- hosts and origins ----------------------------------------------------------------------------
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEVELOPMENT else [])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must list the host names this site answers to")
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000" if DEVELOPMENT else f"https://{ALLOWED_HOSTS[0]}")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

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
# The name authenticator apps show next to an Aiemaily code (django-otp, accounts/second_factor.py).
OTP_TOTP_ISSUER = env_str("AIEMAILY_TOTP_ISSUER", "Aiemaily")
# The signed link that verifies a user's e-mail address (accounts/verification.py) stays valid this long.
AIEMAILY_EMAIL_VERIFY_SECONDS = env_int("AIEMAILY_EMAIL_VERIFY_SECONDS", 3 * 24 * 3600)
# Mail Aiemaily itself sends (address verification, password reset): an SMTP relay. Development
# prints these messages to the console instead.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend" if DEVELOPMENT
                        else "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", f"Aiemaily <no-reply@{ALLOWED_HOSTS[0]}>")
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
if AIEMAILY_PROCESS == "admin":
    # The staff admin keeps its own cookies: a site session never counts as an admin session (and on
    # one host, such as `make run`'s 127.0.0.1, the two never overwrite each other).
    SESSION_COOKIE_NAME = SESSION_COOKIE_NAME.replace("sessionid", "admin-sessionid")
    CSRF_COOKIE_NAME = CSRF_COOKIE_NAME.replace("csrftoken", "admin-csrftoken")
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


def https_origins(name: str, values: list[str]) -> list[str]:
    """Origins for CSP sources and CORS (also billing's Stripe pages): bare https:// origins only."""
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
AIEMAILY_CSP_CONNECT_SRC = https_origins("AIEMAILY_CSP_CONNECT_SRC", env_list("AIEMAILY_CSP_CONNECT_SRC", []))
# No 'strict-dynamic': a page that never reads request.csp_nonce gets no nonce in its header, and
# 'strict-dynamic' without a nonce would block even our own 'self' scripts. Scripts come from
# 'self' (static files) and may carry the per-response nonce; nothing inline, no eval, anywhere.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        # 'none' by default: each kind of resource the pages use is allowed by its own directive.
        "default-src": [NONE],
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
CORS_ALLOWED_ORIGINS = https_origins("CORS_ALLOWED_ORIGINS", env_list("CORS_ALLOWED_ORIGINS", []))
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
