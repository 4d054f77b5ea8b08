"""The AI assistant (mail/assistant/, worker-ai): the platform key and provider."""

from django.core.exceptions import ImproperlyConfigured

from aiemaily.env import env_bool, env_choice, env_int, env_secret, env_str
from aiemaily.settings.celery import CELERY_TASK_ROUTES
from aiemaily.settings.zones_and_keys import plays

# --- AI assistant (mail/assistant/, worker-ai) ---------------------------------------------------------
# The platform's own AI key is read only by worker-ai; without it (and without a user's own key)
# everything runs on the offline default, which needs no key and no network.
AIEMAILY_AI_PLATFORM_KEY = env_secret("AIEMAILY_AI_PLATFORM_KEY") if "ai" in plays else None
AIEMAILY_AI_PLATFORM_PROVIDER = env_choice("AIEMAILY_AI_PLATFORM_PROVIDER", ("openai", "anthropic"), "openai")
AIEMAILY_AI_PLATFORM_MODEL = env_str("AIEMAILY_AI_PLATFORM_MODEL", "gpt-4o-mini")
AIEMAILY_AI_PLATFORM_BASE_URL = env_str("AIEMAILY_AI_PLATFORM_BASE_URL", "")
# Is a platform key configured anywhere? Web reads this to offer the choice (never the key itself).
AIEMAILY_AI_PLATFORM_ENABLED = env_bool("AIEMAILY_AI_PLATFORM_ENABLED", bool(AIEMAILY_AI_PLATFORM_KEY))
AIEMAILY_AI_TIMEOUT_SECONDS = env_int("AIEMAILY_AI_TIMEOUT_SECONDS", 60)
AIEMAILY_AI_MAX_RETRIES = env_int("AIEMAILY_AI_MAX_RETRIES", 2)
# Mail text sent to a provider per request, newest e-mails first (about 12,000 tokens by default).
AIEMAILY_AI_MAX_PROMPT_CHARS = env_int("AIEMAILY_AI_MAX_PROMPT_CHARS", 48_000)
if AIEMAILY_AI_MAX_PROMPT_CHARS < 1000:
    raise ImproperlyConfigured("AIEMAILY_AI_MAX_PROMPT_CHARS must be at least 1000 (characters of mail per request)")
# Extra CA certificates trusted for AI providers (a company proxy; the test harness's CA).
AIEMAILY_AI_CA_BUNDLE = env_str("AIEMAILY_AI_CA_BUNDLE")
CELERY_TASK_ROUTES["mail.assistant.tasks.*"] = {"queue": "ai"}
