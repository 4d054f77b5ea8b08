"""The signed image proxy: `/image-proxy?u=<remote url>&s=<signature>`.

When a user chooses "load images" for a message, its remote images are fetched by us, not by the
browser, so the sender learns neither the reader's IP address nor the moment the mail was opened
from a direct hit, and the message frame's CSP can keep `img-src` to our own origin.

The proxy must not become an open relay or an SSRF tool, so:
- only URLs we signed are fetched (HMAC from SECRET_KEY via salted_hmac, compared in constant time);
- only http(s), to public addresses: every hop (redirects included) goes through netguard.vet_host
  and we connect to the vetted IP itself, so DNS cannot change the answer in between;
- a size cap, one wall-clock deadline for the whole fetch (connect, headers, body, redirects: a
  watchdog shuts the socket down when it passes, so a server trickling one byte at a time cannot
  hold a web worker beyond it), at most a few redirects, and only raster image/* types
  (SVG is refused: opened directly it is a document that can run script);
- the answer carries nosniff and `default-src 'none'; sandbox`, so even a mislabelled body is inert.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlencode, urljoin, urlsplit

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.urls import reverse
from django.utils.crypto import constant_time_compare, salted_hmac
from django.views.decorators.http import require_GET

from aiemaily.security.netguard import BlockedDestination, VettedAddress, create_connection, vet_host

logger = logging.getLogger(__name__)

_SALT = "aiemaily.security.imageproxy"
PASSED_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"})
MAX_URL_LENGTH = 2048
MAX_REDIRECTS = 3
PROXY_CSP = "default-src 'none'; sandbox"


class ProxyRefused(Exception):  # noqa: N818 - reads as what happened
    """The remote image cannot be served; `status` is what the proxy answers."""

    def __init__(self, reason: str, status: int = 502):
        super().__init__(reason)
        self.status = status


def sign(url: str, *, user_id) -> str:
    """Bound to the viewer: a proxy URL copied out of one user's message view is refused for anyone
    else, so nobody can turn another user's signed URLs into their own fetcher."""
    return salted_hmac(_SALT, f"{user_id}|{url}", algorithm="sha256").hexdigest()


def proxy_url(url: str, *, user_id) -> str:
    """Our URL for a remote image, for one viewer (see proxy_url_for)."""
    return f"{reverse('image-proxy')}?{urlencode({'u': url, 's': sign(url, user_id=user_id)})}"


def proxy_url_for(user_id):
    """The `proxy_url` function sanitise_email_html takes, signing for this viewer."""
    return lambda url: proxy_url(url, user_id=user_id)


def signature_ok(url: str, signature: str, *, user_id) -> bool:
    return bool(url) and bool(signature) and constant_time_compare(sign(url, user_id=user_id), signature)


@dataclass(frozen=True)
class Fetched:
    content_type: str
    body: bytes


def _target(url: str) -> tuple[str, VettedAddress, str]:
    """Scheme, vetted address and request path for one hop; refuses anything but public http(s)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise ProxyRefused("only plain http(s) URLs without credentials are proxied", 400)
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise ProxyRefused("invalid port", 400) from None
    try:
        vetted = vet_host(parts.hostname, port)
    except BlockedDestination as exc:
        raise ProxyRefused(str(exc), 403) from None
    path = parts.path or "/"
    return scheme, vetted, path + (f"?{parts.query}" if parts.query else "")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to the vetted IP; the Host header still names the original host."""

    def __init__(self, vetted: VettedAddress, timeout: float):
        super().__init__(vetted.host, vetted.port, timeout=timeout)
        self._vetted = vetted

    def connect(self):
        self.sock = create_connection(self._vetted, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to the vetted IP, with SNI and certificate checks for the original host name."""

    def __init__(self, vetted: VettedAddress, timeout: float):
        super().__init__(vetted.host, vetted.port, timeout=timeout, context=ssl.create_default_context())
        self._vetted = vetted

    def connect(self):
        raw = create_connection(self._vetted, self.timeout)
        self.sock = raw  # visible to the watchdog during the TLS handshake too
        self.sock = self._context.wrap_socket(raw, server_hostname=self._vetted.host)


class _Watchdog:
    """Enforces the deadline on a whole hop: socket timeouts apply per read, and a server sending a
    byte just before each one expires would otherwise never time out. When the deadline passes, the
    socket is shut down, so the blocked read returns at once and the fetch is refused as too slow."""

    def __init__(self, connection: http.client.HTTPConnection, deadline: float):
        self._connection = connection
        self.expired = threading.Event()
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._expire)
        self._timer.daemon = True

    def _expire(self):
        self.expired.set()
        sock = self._connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed: nothing left to stop
                pass

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc_info):
        self._timer.cancel()


def _read_capped(response: http.client.HTTPResponse, limit: int, deadline: float) -> bytes:
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ProxyRefused("image too large", 502)
    chunks, size = [], 0
    while True:
        if time.monotonic() > deadline:
            raise ProxyRefused("remote server too slow", 504)
        chunk = response.read(16384)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise ProxyRefused("image too large", 502)
        chunks.append(chunk)


def _content_type(response: http.client.HTTPResponse) -> str:
    value = (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
    if value not in PASSED_TYPES:
        raise ProxyRefused("not a raster image", 415)
    return value


def _fetch_hop(connection, path: str, deadline: float) -> Fetched | str:
    """One request: the image, or the next URL (a string) when the answer is a redirect."""
    connection.request("GET", path, headers={"User-Agent": "Aiemaily-ImageProxy", "Accept": "image/*"})
    response = connection.getresponse()
    if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
        return response.getheader("Location")
    if response.status != 200:
        raise ProxyRefused(f"remote answered {response.status}", 502)
    content_type = _content_type(response)
    return Fetched(content_type, _read_capped(response, settings.AIEMAILY_IMAGE_PROXY_MAX_BYTES, deadline))


def fetch_image(url: str) -> Fetched:
    """GET a remote image within the limits in settings; follows a few redirects, vetting each."""
    deadline = time.monotonic() + settings.AIEMAILY_IMAGE_PROXY_TIMEOUT
    for _ in range(MAX_REDIRECTS + 1):
        scheme, vetted, path = _target(url)
        connection_class = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
        connection = connection_class(vetted, timeout=max(0.1, deadline - time.monotonic()))
        watchdog = _Watchdog(connection, deadline)
        try:
            with watchdog:
                result = _fetch_hop(connection, path, deadline)
        except (OSError, http.client.HTTPException) as exc:
            if watchdog.expired.is_set():
                raise ProxyRefused("remote server too slow", 504) from None
            status = 504 if isinstance(exc, TimeoutError) else 502
            raise ProxyRefused(f"fetch failed: {type(exc).__name__}", status) from None
        finally:
            connection.close()
        # A body cut short by the watchdog can look complete (no Content-Length): never serve it.
        if watchdog.expired.is_set():
            raise ProxyRefused("remote server too slow", 504)
        if isinstance(result, Fetched):
            return result
        url = urljoin(url, result)
    raise ProxyRefused("too many redirects", 502)


def _refusal(status: int) -> HttpResponse:
    response = HttpResponse(status=status, content_type="text/plain")
    response["Content-Security-Policy"] = PROXY_CSP
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_GET
def image_proxy(request):
    url, signature = request.GET.get("u", ""), request.GET.get("s", "")
    if len(url) > MAX_URL_LENGTH or not signature_ok(url, signature, user_id=request.user.pk):
        return _refusal(403)
    try:
        image = fetch_image(url)
    except ProxyRefused as exc:
        # The host is logged (it is what an operator needs); the path and query may carry tokens.
        logger.warning("image proxy refused %s: %s", urlsplit(url).hostname, exc)
        return _refusal(exc.status)
    response = HttpResponse(image.body, content_type=image.content_type)
    response["Content-Security-Policy"] = PROXY_CSP
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=86400"
    return response
