"""The API's field for secret input (passwords, API keys): masked from the moment it is parsed.

Here, with SecretStr, rather than in aiemaily.api: the project's shared API code then never
depends on the vault app.
"""

from rest_framework import serializers

from secrets_vault.crypto import SecretStr


class SecretField(serializers.CharField):
    """A write-only string that becomes a SecretStr at once and is never rendered back."""

    def __init__(self, **kwargs):
        kwargs.setdefault("write_only", True)
        kwargs.setdefault("trim_whitespace", True)
        super().__init__(**kwargs)

    def run_validation(self, data=serializers.empty):
        # Length and blank checks run on the string; what leaves the field is already masked.
        value = super().run_validation(data)
        return SecretStr(value) if isinstance(value, str) else value
