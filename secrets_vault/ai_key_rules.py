"""What a BYOK AI key must look like before it is sealed: one rule set for the API (POST ai-keys) and
the AI settings page. Messages never contain the value."""

import re

from aiemaily.security.netguard import BlockedDestination, UnresolvableHost, vet_base_url

# Shapes of real keys, checked so a pasted e-mail address or half a key fails at once.
KEY_SHAPES = {
    "openai": re.compile(r"^sk-[A-Za-z0-9_-]{20,300}$"),
    "anthropic": re.compile(r"^sk-ant-[A-Za-z0-9_-]{20,300}$"),
}
# A self-hosted server (vLLM, llama.cpp, Ollama) behind a base URL takes whatever key it was given.
SELF_HOSTED_KEY = re.compile(r"^[A-Za-z0-9._~+/=-]{1,400}$")


def ai_key_problems(*, provider: str, key: str, base_url: str) -> dict[str, str]:
    """Field name → what is wrong; empty when the key may be stored."""
    shape = SELF_HOSTED_KEY if base_url else KEY_SHAPES[provider]
    if not shape.match(key):
        return {"key": "This does not look like a key for that provider."}
    if base_url:
        # The outbound-request guard, at store time (and again before every call, in worker-ai).
        # A name that does not resolve right now is stored (https only): nothing can be
        # reached through it, and the call-time check vets whatever it resolves to then.
        try:
            vet_base_url(base_url)
        except UnresolvableHost:
            if not base_url.lower().startswith("https://"):
                return {"base_url": "Plain http is allowed only for hosts the operator listed."}
        except BlockedDestination as exc:
            return {"base_url": f"This address is not allowed: {exc}"}
    return {}
