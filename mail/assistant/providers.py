"""AI provider adapters behind one small interface (runs in worker-ai).

Two wire formats cover the field: OpenAI-compatible chat completions (OpenAI itself, and
self-hosted vLLM, llama.cpp's server and Ollama through a base URL) and Anthropic messages. Both
stream server-sent events, parsed here to the letter of the SSE format (multi-line `data:`, comments,
`event:` names, a missing terminator is an error, not a short answer).

Why not the official SDKs: every connection must go to the address `netguard.vet_host` vetted, so
a DNS answer cannot change between the check and the connect (SDKs resolve names themselves);
the SDKs also retry on their own, and retries here are bounded by us and visible to the user. The
standard library's http.client does what both formats need.

Keys travel only in `Authorization: Bearer` (OpenAI-compatible) or `x-api-key` (Anthropic), never
in a URL, a log line or an error message; provider error bodies are not echoed (OpenAI's 401 body
quotes part of the key).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from django.conf import settings

from aiemaily.security.netguard import BlockedDestination, VettedAddress, create_connection, vet_base_url
from secrets_vault.crypto import SecretStr

DEFAULT_BASE = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
DEFAULT_MODEL = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest"}
ANTHROPIC_VERSION = "2023-06-01"
MAX_RESPONSE_BYTES = 1_000_000


class ProviderError(Exception):
    """A provider problem as the user should read it. `retryable` errors may be tried again."""

    def __init__(self, code: str, message: str, *, retryable: bool = False, retry_after: int | None = None):
        super().__init__(message)
        self.code, self.message, self.retryable, self.retry_after = code, message, retryable, retry_after


@dataclass
class Target:
    """Where one request goes and with what. `key` is None for a self-hosted model without one."""

    provider: str
    model: str
    base_url: str = ""
    key: SecretStr | None = None

    def __repr__(self):  # never the key
        return f"<Target {self.provider} {self.model} {self.base_url or 'default'}>"


@dataclass
class Completion:
    text: str
    bytes_sent: int = 0
    bytes_received: int = 0
    events: int = 0
    meta: dict = field(default_factory=dict)


def check_base_url(url: str) -> VettedAddress:
    """The outbound-request guard, at call time (the same check ran when the URL was stored)."""
    return vet_base_url(url)


class _Pinned(http.client.HTTPConnection):
    def __init__(self, vetted: VettedAddress, timeout: float):
        super().__init__(vetted.host, vetted.port, timeout=timeout)
        self._vetted = vetted

    def connect(self):
        self.sock = create_connection(self._vetted, self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    def __init__(self, vetted: VettedAddress, timeout: float):
        context = ssl.create_default_context(cafile=settings.AIEMAILY_AI_CA_BUNDLE or None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        super().__init__(vetted.host, vetted.port, timeout=timeout, context=context)
        self._vetted = vetted

    def connect(self):
        raw = create_connection(self._vetted, self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self._vetted.host)


def _retry_after(value: str | None) -> int | None:
    if not value:
        return None
    if value.strip().isdigit():
        return int(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, int((when - datetime.now(UTC)).total_seconds())) if when else None


def _status_error(status: int, retry_after: int | None) -> ProviderError:
    if status == 401:
        return ProviderError("bad_key", "The AI provider refused the key (401): check or replace it in AI settings.")
    if status == 403:
        return ProviderError("forbidden", "The AI provider refused this request (403): the key may lack access "
                                          "to this model.")
    if status == 404:
        return ProviderError("not_found", "The AI provider does not know this model or address (404).")
    if status == 429:
        wait = f" Try again in {retry_after} s." if retry_after is not None else " Try again later."
        return ProviderError("rate_limited", "The AI provider is rate-limiting this key (429)." + wait,
                             retryable=True, retry_after=retry_after)
    if status in (408, 409) or status >= 500:
        return ProviderError("unavailable", f"The AI provider is unavailable right now ({status}).", retryable=True,
                             retry_after=retry_after)
    return ProviderError("bad_request", f"The AI provider rejected the request ({status}).")


def sse_events(lines: Iterator[bytes]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs from a text/event-stream, per the WHATWG definition."""
    event, data = "", []
    for raw in lines:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line == "":
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if data:  # a final event without its blank line still counts
        yield event or "message", "\n".join(data)


class ChatProvider:
    """One small interface: stream(system, user) yields text deltas; complete() collects them."""

    name = ""

    def __init__(self, target: Target, *, timeout: float | None = None, vet=check_base_url):
        self.target = target
        self.base = (target.base_url or DEFAULT_BASE[self.name]).rstrip("/")
        self.timeout = timeout or settings.AIEMAILY_AI_TIMEOUT_SECONDS
        self._vet = vet
        self.bytes_sent = self.bytes_received = 0

    # -- wire format, per provider --
    def _path(self) -> str:
        raise NotImplementedError

    def _headers(self) -> dict:
        raise NotImplementedError

    def _body(self, system: str, user: str, max_tokens: int) -> dict:
        raise NotImplementedError

    def _deltas(self, events: Iterator[tuple[str, str]]) -> Iterator[str]:
        raise NotImplementedError

    def _whole(self, payload: dict) -> str:
        raise NotImplementedError

    # -- shared transport --
    def _open(self, body: bytes):
        url = urlsplit(self.base)
        try:
            vetted = self._vet(self.base)
        except BlockedDestination as exc:
            raise ProviderError("blocked", f"This AI address is not allowed: {exc}") from None
        conn_class = _PinnedTLS if url.scheme == "https" else _Pinned
        conn = conn_class(vetted, self.timeout)
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream", **self._headers()}
        try:
            conn.request("POST", (url.path or "") + self._path(), body=body, headers=headers)
            response = conn.getresponse()
        except TimeoutError:
            conn.close()
            raise ProviderError("timeout", "The AI provider did not answer in time.", retryable=True) from None
        except ssl.SSLError:
            conn.close()
            raise ProviderError("tls", "The AI provider's TLS certificate could not be verified.") from None
        except OSError:
            conn.close()
            raise ProviderError("unreachable", "The AI provider could not be reached.", retryable=True) from None
        self.bytes_sent += len(body)
        return conn, response

    def _lines(self, response) -> Iterator[bytes]:
        deadline = time.monotonic() + self.timeout
        while True:
            if time.monotonic() > deadline:
                raise ProviderError("timeout", "The AI provider's answer took too long.", retryable=True)
            try:
                line = response.readline(65537)
            except TimeoutError:
                raise ProviderError("timeout", "The AI provider stopped answering.", retryable=True) from None
            except (OSError, http.client.HTTPException):
                raise ProviderError("malformed_stream", "The AI provider's answer was cut off.",
                                    retryable=True) from None
            if not line:
                return
            self.bytes_received += len(line)
            if self.bytes_received > MAX_RESPONSE_BYTES:
                raise ProviderError("too_large", "The AI provider's answer was too large.")
            yield line

    def stream(self, system: str, user: str, *, max_tokens: int = 800) -> Iterator[str]:
        body = json.dumps(self._body(system, user, max_tokens)).encode()
        conn, response = self._open(body)
        try:
            if response.status != 200:
                retry_after = _retry_after(response.getheader("Retry-After"))
                response.read(65536)  # drain a little; never shown
                raise _status_error(response.status, retry_after)
            content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
            if content_type == "application/json":  # a server that ignores "stream": answer in one piece
                payload = b"".join(self._lines(response))
                try:
                    yield self._whole(json.loads(payload))
                except (ValueError, KeyError, IndexError, TypeError):
                    raise ProviderError("malformed_stream", "The AI provider's answer could not be read.") from None
                return
            if content_type != "text/event-stream":
                raise ProviderError("malformed_stream", "The AI provider answered in an unexpected format.")
            yield from self._deltas(sse_events(self._lines(response)))
        finally:
            conn.close()

    def complete(self, system: str, user: str, *, max_tokens: int = 800) -> Completion:
        text = "".join(self.stream(system, user, max_tokens=max_tokens))
        return Completion(text=text, bytes_sent=self.bytes_sent, bytes_received=self.bytes_received)


def _json(data: str) -> dict:
    try:
        value = json.loads(data)
    except ValueError:
        raise ProviderError("malformed_stream", "The AI provider sent a malformed stream.", retryable=True) from None
    if not isinstance(value, dict):
        raise ProviderError("malformed_stream", "The AI provider sent a malformed stream.", retryable=True)
    return value


def _stream_error(payload: dict) -> ProviderError:
    error = payload.get("error") if isinstance(payload.get("error"), dict) else {}
    kind = str(error.get("type") or error.get("code") or "")
    if "overloaded" in kind or "rate" in kind:
        return ProviderError("unavailable", "The AI provider is overloaded right now.", retryable=True)
    return ProviderError("provider_error", "The AI provider reported an error while answering.")


class OpenAIChat(ChatProvider):
    """POST {base}/chat/completions, `stream: true`; deltas in choices[0].delta.content; ends with [DONE]."""

    name = "openai"

    def _path(self):
        return "/chat/completions"

    def _headers(self):
        return {"Authorization": f"Bearer {self.target.key.reveal()}"} if self.target.key else {}

    def _body(self, system, user, max_tokens):
        return {"model": self.target.model, "stream": True, "max_tokens": max_tokens, "temperature": 0.2,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}

    def _deltas(self, events):
        for _event, data in events:
            if data.strip() == "[DONE]":
                return
            payload = _json(data)
            if "error" in payload:
                raise _stream_error(payload)
            for choice in payload.get("choices") or []:
                content = ((choice or {}).get("delta") or {}).get("content")
                if isinstance(content, str):
                    yield content
        raise ProviderError("malformed_stream", "The AI provider's answer was cut off.", retryable=True)

    def _whole(self, payload):
        return payload["choices"][0]["message"]["content"] or ""


class AnthropicMessages(ChatProvider):
    """POST {base}/v1/messages, `stream: true`; text in content_block_delta events; ends with message_stop."""

    name = "anthropic"

    def _path(self):
        return "/v1/messages"

    def _headers(self):
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self.target.key:
            headers["x-api-key"] = self.target.key.reveal()
        return headers

    def _body(self, system, user, max_tokens):
        return {"model": self.target.model, "stream": True, "max_tokens": max_tokens, "temperature": 0.2,
                "system": system, "messages": [{"role": "user", "content": user}]}

    def _deltas(self, events):
        for event, data in events:
            payload = _json(data)
            kind = payload.get("type") or event
            if kind == "error":
                raise _stream_error(payload)
            if kind == "content_block_delta":
                delta = payload.get("delta") or {}
                if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                    yield delta["text"]
            elif kind == "message_stop":
                return
        raise ProviderError("malformed_stream", "The AI provider's answer was cut off.", retryable=True)

    def _whole(self, payload):
        return "".join(block.get("text", "") for block in payload["content"] if block.get("type") == "text")


ADAPTERS = {"openai": OpenAIChat, "anthropic": AnthropicMessages}


def provider_for(target: Target, **kwargs) -> ChatProvider:
    return ADAPTERS[target.provider](target, **kwargs)
