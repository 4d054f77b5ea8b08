"""The HTTPS part the local provider fakes share (tests/harness/gmail_api_server.py and the fakes built
on it, tests/harness/oauth_servers.py): a ThreadingHTTPServer on 127.0.0.1 in a daemon thread, with a
certificate from the test CA, that hands each request to its owner; the Response a fake answers and
its writing; and the session-wide fixture that runs one fake for the whole test run."""

import json
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Response:
    """What a fake answers."""

    status: int
    body: bytes = b""
    headers: dict = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload, **headers) -> "Response":
        return cls(status, json.dumps(payload).encode(), {"Content-Type": "application/json; charset=UTF-8", **headers})


class TLSServer(ThreadingHTTPServer):
    """Serves `handler`, whose requests reach `owner` (a fake) as `self.server.owner`."""

    daemon_threads = True

    def __init__(self, owner, ca, handler: type[BaseHTTPRequestHandler]):
        self.owner = owner
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(ca.cert_file, ca.key_file)
        super().__init__(("127.0.0.1", 0), handler)

    def finish_request(self, request, client_address):
        # The TLS handshake runs in the request's own thread, so a slow client never blocks accept().
        try:
            request = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(request, client_address)

    def start(self) -> "TLSServer":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def write_response(handler: BaseHTTPRequestHandler, response) -> None:
    """Sends a fake's Response (status, headers, body) with its Content-Length."""
    handler.send_response(response.status)
    for name, value in response.headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(response.body)))
    handler.end_headers()
    handler.wfile.write(response.body)


def session_server(fake: type, name: str):
    """A session-scoped fixture called `name`: one `fake(test_ca)` for the whole run, stopped at its end.
    Each test resets the fake in its own function-scoped fixture."""

    def running(test_ca):
        server = fake(test_ca)
        yield server
        server.stop()

    return pytest.fixture(scope="session", name=name)(running)
