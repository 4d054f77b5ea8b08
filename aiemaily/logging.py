"""Logging that cannot leak secrets: redaction by pattern on every record and every error report.

Redaction is a safety net, not the mechanism: code never logs secrets on purpose. The net catches
what slips through (a token in an exception message, a password in a URL).
"""

import json
import logging
import re
from datetime import UTC, datetime

from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

REDACTED = "[REDACTED]"

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?-----END [A-Z0-9 ]+-----", re.S), REDACTED),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*"), "Bearer " + REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{6,}"), REDACTED),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]{6,}"), REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), REDACTED),
    (re.compile(r"\bya29\.[A-Za-z0-9_.-]+"), REDACTED),
    (re.compile(r"\b1//[A-Za-z0-9_-]{10,}"), REDACTED),
    # OAuth authorization codes and state in query strings (callback URLs)
    (re.compile(r"([?&](?:code|state)=)[^&\s\"']+"), r"\1" + REDACTED),
    # user:password@ in any URL
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/\s@]*:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
    # password=..., "api_key": "...", token: ...
    (
        re.compile(
            r"(?i)\b((?:pass(?:word|wd)?|secret|token|api[_-]?key|authorization|client[_-]?secret|"
            r"refresh[_-]?token|access[_-]?token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',&;}]+"
        ),
        r"\1" + REDACTED,
    ),
]


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# Set on a record once RedactSecretsFilter has redacted its message, traceback and stack: the
# formatters below then format what is already clean instead of scanning every line a second time.
_REDACTED = "_aiemaily_redacted"


class RedactSecretsFilter(logging.Filter):
    """Renders the message and the traceback once, redacted, so no handler sees the raw values."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _REDACTED, False):
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        setattr(record, _REDACTED, True)
        return True


class RedactingTextFormatter(logging.Formatter):
    """Redacts what it formats, unless RedactSecretsFilter already has (the handlers in settings)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if getattr(record, _REDACTED, False) else redact(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log shippers parse without regexes. Redacted like the text one:
    the other fields are the logger's name, the level, a time and our own ids and event names."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("owner_id", "event", "status_code"):
            if hasattr(record, key):
                entry[key] = str(getattr(record, key))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        line = json.dumps(entry, default=str)
        return line if getattr(record, _REDACTED, False) else redact(line)


class SecretRedactingExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, also hiding connection URLs and any value that looks like a secret."""

    hidden_settings = re.compile(
        "API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|URL|DSN|DATABASE|BROKER|CACHES|LOCATION|AUTH",
        flags=re.I,
    )

    def cleanse_setting(self, key, value):
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):
            return redact(cleansed)
        return cleansed

    def get_traceback_frame_variables(self, request, tb_frame):
        variables = super().get_traceback_frame_variables(request, tb_frame)
        cleaned = []
        for name, value in variables:
            if self.hidden_settings.search(str(name)):
                cleaned.append((name, self.cleansed_substitute))
                continue
            try:
                text = repr(value)
            except Exception:  # noqa: BLE001 - a broken __repr__ must not break the error report
                text = "<unrepresentable>"
            safe = redact(text)
            cleaned.append((name, safe if safe != text else value))
        return cleaned

    def get_post_parameters(self, request):
        params = super().get_post_parameters(request)
        if not params:
            return params
        params = params.copy()
        for key in list(params.keys()):
            if self.hidden_settings.search(key):
                params[key] = self.cleansed_substitute
            else:
                params[key] = redact(str(params[key]))
        return params


class SecretRedactingExceptionReporter(ExceptionReporter):
    """Error reports (debug page, admin e-mails) with the exception text and the output redacted."""

    def get_traceback_data(self):
        data = super().get_traceback_data()
        if isinstance(data.get("exception_value"), str):
            data["exception_value"] = redact(data["exception_value"])
        return data

    def get_traceback_html(self):
        return redact(super().get_traceback_html())

    def get_traceback_text(self):
        return redact(super().get_traceback_text())
