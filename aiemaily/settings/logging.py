"""Logging: JSON or text, always through the secret-redaction filter."""

from aiemaily.env import env_choice, env_str
from aiemaily.settings.core import DEVELOPMENT

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
        # stripe-python logs whole request and response bodies at DEBUG: customers' names, addresses,
        # card details of the objects it fetches (promise 9). INFO says only method, path and status.
        "stripe": {"level": "INFO"},
    },
}
DEFAULT_EXCEPTION_REPORTER = "aiemaily.logging.SecretRedactingExceptionReporter"
DEFAULT_EXCEPTION_REPORTER_FILTER = "aiemaily.logging.SecretRedactingExceptionReporterFilter"
