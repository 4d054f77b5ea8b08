"""The REST API: DRF defaults (deny by default), JWTs, the OpenAPI schema."""

from datetime import timedelta

from aiemaily.env import env_int, env_str
from aiemaily.settings.security import JWT_PRIVATE_KEY, JWT_PUBLIC_KEY, SITE_URL

# --- REST API --------------------------------------------------------------------------------------
# Request bodies up to nginx's client_max_body_size (deploy/nginx/aiemaily.conf): the largest body the
# schema allows (a 500,000-character mail, JSON-escaped at up to 12 bytes a character) fits; a larger
# one is 413 `request_too_large` (Django's default, 2.5 MB, refused bodies the schema allows).
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["aiemaily.api.authentication.OwnerBoundJWTAuthentication"],
    # Denied unless a view says who may use it (see tests/project/test_api_conventions.py).
    "DEFAULT_PERMISSION_CLASSES": ["aiemaily.api.permissions.DenyAll"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["aiemaily.api.parsers.SafeJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "aiemaily.api.schema.ApiAutoSchema",
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
    # Rotation and reuse detection run on our hashed ledger (accounts/refresh_tokens.py), not on
    # simplejwt's blacklist app, which stores every refresh token in plain text.
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": False,
    # Each token carries a digest of the password hash: a password change or reset voids every
    # access token at once, not only when it expires.
    "CHECK_REVOKE_TOKEN": True,
    "REVOKE_TOKEN_CLAIM": "pwd",
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
    "DESCRIPTION": "The Aiemaily REST API. Authenticate with `Authorization: Bearer <JWT>` (from `auth/token`). "
                   "Every error is `{\"error\": {\"code\", \"message\"}}` with the status it documents; no "
                   "string may contain a NUL character (400 `invalid`). Mutating calls take an `Idempotency-Key`. "
                   "Lists are paged with an opaque `cursor` (from `next`/`previous`) and `limit`. See docs/api.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Request and response shapes differ (write-only secrets, defaults): one component each.
    "COMPONENT_SPLIT_REQUEST": True,
    # One name per one-value answer enum (else spectacular numbers colliding "status" enums).
    "ENUM_NAME_OVERRIDES": {"QueuedEnum": ["queued"], "DeletingEnum": ["deleting"]},
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "aiemaily.api.schema.add_links"],
}
