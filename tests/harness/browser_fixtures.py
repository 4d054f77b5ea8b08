"""Shared helpers for the browser and image-proxy tests: Debian's Chromium, a page that records CSP
violations, signing in through the login form, waiting for the offline summary, and a fake remote site.

The fake "remote" image server listens on 127.0.0.1, which the SSRF guard refuses by default: tests
that want it reachable list 127.0.0.1 in AIEMAILY_ALLOWED_PRIVATE_HOSTS, and the others prove it
is never contacted. It records every request path so a test can assert "no request was made".
"""

import base64
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.harness.factories import DEFAULT_PASSWORD
from tests.harness.system import require_tool

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
# A real 1x1 PNG: browsers decode it, so an <img> that loaded it has naturalWidth 1.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


# Injected into every page over the DevTools protocol (the page's own CSP does not apply to it), so a
# test can read what the browser refused: see violations() in tests/project/test_browser_csp.py.
COLLECT_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push({directive: e.effectiveDirective, blocked: e.blockedURI, source: e.sourceFile});
});
"""


def ensure_chromium() -> str:
    return require_tool("chromium")


def open_page(browser, *, timeout_ms: int, **context_options):
    """A fresh browser context whose documents record CSP violations, and its first page, which fails
    rather than hangs when something never appears. Returns (context, page); the caller closes the context."""
    context = browser.new_context(**context_options)
    context.add_init_script(COLLECT_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    return context, page


def sign_in(page, base: str, user) -> None:
    """Signs `user` in through the login form, as a person would, and waits for the dashboard."""
    page.goto(base + "/accounts/login/")
    page.fill("input[name=username]", user.email)
    page.fill("input[name=password]", DEFAULT_PASSWORD)
    page.click("form.card button[type=submit]")
    page.wait_for_url(base + "/dashboard/")


def offline_summary(page, logs) -> str:
    """The summary worker-ai made offline, once the page (which polls for it) shows it; if it never
    does, the failure carries `logs()` (the workers' output)."""
    try:
        page.wait_for_selector('.ai-summary [data-ai-source="offline"]', timeout=60_000)
    except Exception:
        raise AssertionError(logs()) from None
    return page.inner_text(".ai-summary")


class _RemoteSite(BaseHTTPRequestHandler):
    """Routes: /pic.png, /page.html, /vector.svg, /huge (declared), /stream (undeclared), /slow,
    /redirect?to=URL, /trickle-body and /trickle-headers (one byte every 0.2 s, each read quick
    enough that a per-read timeout never fires)."""

    hits: list[str]
    huge_size = 6 * 1024 * 1024

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status: int, content_type: str, body: bytes, length: int | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - the http.server API
        self.hits.append(self.path)
        route = self.path.split("?", 1)[0]
        if route == "/pic.png":
            self._send(200, "image/png", PNG)
        elif route == "/page.html":
            self._send(200, "text/html; charset=utf-8", b"<script>alert(1)</script>")
        elif route == "/vector.svg":
            self._send(200, "image/svg+xml", b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>")
        elif route == "/huge":
            self._send(200, "image/png", PNG, length=self.huge_size)
        elif route == "/stream":
            self._stream_without_length()
        elif route == "/slow":
            time.sleep(3)
            self._send(200, "image/png", PNG)
        elif route == "/trickle-body":
            self._trickle(b"", PNG * 4)
        elif route == "/trickle-headers":
            self._trickle(b"X-Padding: " + b"a" * 200 + b"\r\n", b"")
        elif route == "/redirect":
            self.send_response(302)
            self.send_header("Location", self.path.split("to=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, "text/plain", b"no")

    def _trickle(self, slow_headers: bytes, slow_body: bytes):
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n")
        self.wfile.write(f"Content-Length: {len(slow_body)}\r\n".encode())
        self.wfile.flush()
        try:
            for byte in slow_headers:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
            self.wfile.write(b"\r\n")
            for byte in slow_body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:  # the proxy gave up: that is the point
            pass
        self.close_connection = True

    def _stream_without_length(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b"\0" * 65536
        try:
            for _ in range(self.huge_size // len(chunk) + 2):
                self.wfile.write(chunk)
        except OSError:  # the proxy hung up once it had enough: that is the point
            pass


@contextmanager
def remote_image_site() -> Iterator[tuple[str, list[str]]]:
    """(base URL, list of request paths) of a throwaway HTTP server on 127.0.0.1."""
    hits: list[str] = []
    handler = type("RemoteSite", (_RemoteSite,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
