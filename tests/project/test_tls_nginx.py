"""The shipped nginx configuration, run for real: TLS 1.2/1.3 only, ECDHE + AEAD only, HTTPS only,
forwarding headers set by nginx and never taken from the client.

nginx (and testssl.sh, both from Debian, installed with apt-get when missing) serves the rendered
deploy/nginx/aiemaily.conf with a throwaway RSA certificate on free ports; a tiny echo server
stands in for gunicorn and reports the headers it received. The client side uses
`openssl s_client` configured to offer everything, so every refusal below is the server's.
"""

import http.client
import json
import ssl
import subprocess

import pytest

from tests.harness.tls_fixtures import (
    SITE_CONF,
    TLS_SNIPPET,
    echo_upstream,
    ensure_testssl,
    openssl_client,
    running_nginx,
)

pytestmark = pytest.mark.claim("tls")

ANY_CIPHER = ["-cipher", "DEFAULT:@SECLEVEL=0"]
# TLS 1.2 suites that must be refused: CBC modes, RSA key transport (no forward secrecy), finite-field
# DHE. The server has an RSA key, so each would be negotiable if the configuration allowed it.
# (3DES is gone from OpenSSL 3's default provider, so s_client cannot offer it; testssl.sh's own
# sockets check that category below.)
WEAK_TLS12_SUITES = [
    "AES128-SHA", "AES256-SHA256", "AES128-GCM-SHA256", "AES256-GCM-SHA384",  # RSA key exchange
    "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA384", "ECDHE-RSA-AES128-SHA256",  # ECDHE but CBC
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-CHACHA20-POLY1305",  # finite-field DHE
]
STRONG_TLS12_SUITES = ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"]


@pytest.fixture(scope="module")
def server():
    with echo_upstream() as upstream_port, running_nginx(upstream_port) as nginx:
        yield nginx


def _output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def _negotiated(result: subprocess.CompletedProcess) -> str | None:
    for line in result.stdout.splitlines():
        if ", Cipher is " in line and "(NONE)" not in line:
            return line.split("Cipher is ", 1)[1].strip()
    return None


@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_tls_1_0_and_1_1_are_refused_with_a_protocol_version_alert(server, flag):
    result = openssl_client(server.https_port, flag, *ANY_CIPHER)
    assert result.returncode != 0
    assert _negotiated(result) is None
    # Alert 70 from the server, not "no protocols available" from our own client.
    assert "alert protocol version" in _output(result)


@pytest.mark.parametrize(("flag", "expected"), [("-tls1_2", "ECDHE-RSA-"), ("-tls1_3", "TLS_")])
def test_tls_1_2_and_1_3_are_accepted_with_an_aead_suite(server, flag, expected):
    result = openssl_client(server.https_port, flag)
    cipher = _negotiated(result)
    assert result.returncode == 0, _output(result)
    assert cipher and cipher.startswith(expected)
    assert any(mode in cipher for mode in ("GCM", "CHACHA20"))


@pytest.mark.parametrize("suite", STRONG_TLS12_SUITES)
def test_control_each_configured_tls12_suite_can_be_negotiated(server, suite):
    # The same client invocation as the refusals below, succeeding: the refusals are meaningful.
    result = openssl_client(server.https_port, "-tls1_2", "-cipher", f"{suite}:@SECLEVEL=0")
    assert _negotiated(result) == suite


@pytest.mark.parametrize("suite", WEAK_TLS12_SUITES)
def test_cbc_and_non_forward_secret_suites_are_refused(server, suite):
    result = openssl_client(server.https_port, "-tls1_2", "-cipher", f"{suite}:@SECLEVEL=0")
    assert result.returncode != 0
    assert _negotiated(result) is None
    assert "alert handshake failure" in _output(result)


@pytest.fixture(scope="module")
def testssl_findings(server, tmp_path_factory):
    """testssl.sh's own view: protocols (-p), cipher categories (-s) and every offered cipher (-E)."""
    report = tmp_path_factory.mktemp("testssl") / "report.json"
    command = [ensure_testssl(), "--quiet", "--color", "0", "--warnings", "off", "-p", "-s", "-E",
               "--jsonfile", str(report), f"https://127.0.0.1:{server.https_port}"]
    subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    return {entry["id"]: entry["finding"] for entry in json.loads(report.read_text())}


def test_testssl_sees_only_tls_1_2_and_1_3(testssl_findings):
    for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert testssl_findings[old] == "not offered", old
    assert testssl_findings["TLS1_2"] == "offered"
    assert testssl_findings["TLS1_3"].startswith("offered")


def test_testssl_finds_no_weak_cipher_category(testssl_findings):
    for category in ("NULL", "aNULL", "EXPORT", "LOW", "3DES_IDEA", "AVERAGE"):
        # AVERAGE is testssl's name for the obsolete CBC suites.
        assert testssl_findings[f"cipherlist_{category}"] == "not offered", category
    assert testssl_findings["cipherlist_STRONG"] == "offered"


def test_testssl_lists_only_ecdhe_aead_ciphers(testssl_findings):
    offered = {key: value for key, value in testssl_findings.items() if key.startswith("cipher-")}
    assert offered, "testssl listed no ciphers at all"
    assert all(key.startswith(("cipher-tls1_2_", "cipher-tls1_3_")) for key in offered)
    for finding in offered.values():
        assert " ECDH " in f" {finding} ", finding  # key exchange: elliptic-curve ephemeral
        assert "AESGCM" in finding or "ChaCha20" in finding, finding


def _https(server, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    context = ssl.create_default_context(cafile=str(server.cert))
    connection = http.client.HTTPSConnection("127.0.0.1", server.https_port, context=context, timeout=10)
    connection.request("GET", path, headers={"Host": "aiemaily.example", **headers})
    return connection.getresponse()


def test_plain_http_is_redirected_to_https(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    connection.request("GET", "/accounts/login/?next=/dashboard/", headers={"Host": "evil.example"})
    response = connection.getresponse()
    assert response.status == 301
    # The configured name, not the Host the client sent.
    assert response.getheader("Location") == "https://aiemaily.example/accounts/login/?next=/dashboard/"


@pytest.mark.parametrize("path", ["/api/v1/account", "/webhooks/gmail"])
def test_forwarding_headers_are_set_by_nginx_never_passed_through(server, path):
    spoofed = {
        "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "http", "X-Real-IP": "6.6.6.6",
        "Forwarded": "for=6.6.6.6;proto=https", "X-Forwarded-Host": "evil.example", "X-Forwarded-Port": "1",
        "X-Forwarded-Ssl": "on", "X-Forwarded-Protocol": "ssl", "X-Url-Scheme": "https",
    }
    response = _https(server, path, spoofed)  # the webhook location inherits the same proxy settings
    assert response.status == 200
    seen = json.loads(response.read())["headers"]
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-real-ip"] == "127.0.0.1"
    assert seen["host"] == "aiemaily.example"
    for dropped in ("forwarded", "x-forwarded-host", "x-forwarded-port", "x-forwarded-ssl",
                    "x-forwarded-protocol", "x-url-scheme"):
        assert dropped not in seen, dropped
    assert "6.6.6.6" not in json.dumps(seen)


def test_webhook_bodies_over_their_cap_are_refused_by_nginx(server):
    context = ssl.create_default_context(cafile=str(server.cert))
    connection = http.client.HTTPSConnection("127.0.0.1", server.https_port, context=context, timeout=10)
    connection.request("POST", "/webhooks/graph", body=b"x" * (600 * 1024),
                       headers={"Host": "aiemaily.example", "Content-Type": "application/json"})
    assert connection.getresponse().status == 413  # never reaches the app


def test_static_files_are_served_by_nginx_with_the_security_headers(server):
    response = _https(server, "/static/js/app.js", {})
    body = response.read()
    assert response.status == 200 and b"appJs" in body  # from disk: the echo upstream answers JSON
    assert response.getheader("Strict-Transport-Security") == "max-age=63072000; includeSubDomains; preload"
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert response.getheader("X-Frame-Options") == "DENY"
    assert response.getheader("Cross-Origin-Resource-Policy") == "same-origin"
    assert "default-src 'none'" in response.getheader("Content-Security-Policy")
    assert response.getheader("Server") == "nginx"  # server_tokens off: no version


def test_the_tls_settings_live_only_in_the_shared_snippet():
    # The test includes the snippet verbatim; the site file must not override it.
    site = SITE_CONF.read_text()
    assert "include snippets/aiemaily-tls.conf;" in site
    for directive in ("ssl_protocols", "ssl_ciphers", "ssl_prefer_server_ciphers", "ssl_session_tickets"):
        assert directive not in site, directive
        assert directive in TLS_SNIPPET.read_text(), directive


def test_access_logs_never_hold_query_strings(server):
    """OAuth callbacks carry the authorization code; image-proxy URLs carry message content."""
    import ssl
    import time
    import urllib.request

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    for path in ("/connections/oauth/gmail/callback?state=Canary-State-77&code=Canary-Code-4%2F0AX",
                 "/image-proxy?u=https%3A%2F%2Ftracker.example%2Fopen%3Fuser%3DCanary-Tracking-9&s=ab"):
        with urllib.request.urlopen(f"https://127.0.0.1:{server.https_port}{path}", context=context) as response:  # noqa: S310
            assert response.status == 200
    log = server.folder / "access.log"
    # nginx writes an access-log line after the response has gone out, and other tests of this
    # module share the log: wait for these two requests' lines, not for a line count.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not all(
            p in log.read_text() for p in ("/connections/oauth/gmail/callback", "/image-proxy")):
        time.sleep(0.1)
    text = log.read_text()
    assert "/connections/oauth/gmail/callback" in text and "/image-proxy" in text
    for canary in ("Canary-State-77", "Canary-Code-4", "Canary-Tracking-9", "?"):
        assert canary not in text, canary
