"""nginx with the shipped TLS configuration, on free ports in a temporary folder, for the TLS tests.

deploy/nginx/aiemaily.conf is rendered by replacing its production ports, paths and upstream with
test values (each replacement must match exactly, so the test breaks if the file drifts), and the
TLS snippet deploy/nginx/aiemaily-tls.conf is included from the repository unchanged.
"""

import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.harness.system import free_port, require_tool

REPO = Path(__file__).resolve().parents[2]  # the repository
SITE_CONF = REPO / "deploy" / "nginx" / "aiemaily.conf"
TLS_SNIPPET = REPO / "deploy" / "nginx" / "aiemaily-tls.conf"
SERVER_NAME = "aiemaily.example"
TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def ensure_nginx() -> str:
    return require_tool("nginx")


def ensure_testssl() -> str:
    # Debian's testssl.sh package installs the script as /usr/bin/testssl.
    return require_tool("testssl.sh")


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def write_self_signed_rsa_cert(folder: Path) -> tuple[Path, Path]:
    """An RSA certificate on purpose: with RSA, RSA-key-exchange and CBC suites would be possible
    if the configuration allowed them, so refusing them proves the configuration, not the key type."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def render_site(replacements: dict[str, str]) -> str:
    text = SITE_CONF.read_text()
    for old, new in replacements.items():
        count = text.count(old)
        if count == 0:
            raise AssertionError(f"deploy/nginx/aiemaily.conf no longer contains {old!r}: update the TLS test")
        text = text.replace(old, new)
    return text


def main_conf(folder: Path, site: Path) -> str:
    mime = "include /etc/nginx/mime.types;" if Path("/etc/nginx/mime.types").exists() else ""
    temp = "\n".join(f"    {kind}_temp_path {folder / kind};" for kind in TEMP_KINDS)
    return f"""worker_processes 1;
error_log {folder / 'error.log'} warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    {mime}
{temp}
    include {site};
}}
"""


class _EchoUpstream(BaseHTTPRequestHandler):
    """Stands in for gunicorn: answers every request with the headers it received, as JSON."""

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 - the http.server API
        body = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def echo_upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoUpstream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class RunningNginx:
    https_port: int
    http_port: int
    folder: Path
    cert: Path
    static_root: Path


def _wait_for(port: int, process: subprocess.Popen, error_log: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = error_log.read_text() if error_log.exists() else ""
            raise RuntimeError(f"nginx exited with {process.returncode}: {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nginx did not start listening")


def _prepare_folder() -> Path:
    # nginx workers run as an unprivileged user: the folder must be readable (static files) and
    # its temp folders writable by them; pytest's own tmp_path is private to root.
    folder = Path(tempfile.mkdtemp(prefix="aiemaily-nginx-"))
    folder.chmod(0o755)
    for kind in TEMP_KINDS:
        (folder / kind).mkdir(mode=0o777)
        (folder / kind).chmod(0o777)
    static = folder / "static" / "js"
    static.mkdir(parents=True)
    (static / "app.js").write_text("document.documentElement.dataset.appJs = 'ready';\n")
    for path in (folder / "static", static, static / "app.js"):
        path.chmod(0o755)
    return folder


def _site_replacements(folder: Path, cert: Path, key: Path, https_port: int, http_port: int,
                       upstream: int | list[int], static_root: Path | None = None) -> dict:
    ipv6 = ipv6_loopback_available()
    upstreams = [upstream] if isinstance(upstream, int) else upstream
    return {
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen [::]:80;": f"listen [::1]:{http_port};" if ipv6 else "",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "listen [::]:443 ssl http2;": f"listen [::1]:{https_port} ssl http2;" if ipv6 else "",
        "/etc/letsencrypt/live/aiemaily.example/fullchain.pem": str(cert),
        "/etc/letsencrypt/live/aiemaily.example/privkey.pem": str(key),
        "include snippets/aiemaily-tls.conf;": f"include {TLS_SNIPPET};",
        "alias /srv/aiemaily/staticfiles/;": f"alias {static_root or folder / 'static'}/;",
        # Several gunicorn processes (prod-sim's two webs) become one upstream group, as in production.
        "server 127.0.0.1:8000;": "\n    ".join(f"server 127.0.0.1:{port};" for port in upstreams),
        "/var/log/nginx/aiemaily.access.log": str(folder / "access.log"),
    }


def nginx_site(upstream_port: int | list[int], *, cert_key: tuple[Path, Path] | None = None,
               static_root: Path | None = None) -> tuple[RunningNginx, list[str]]:
    """The configuration of running_nginx in a new folder, checked by `nginx -t`, and the command
    that runs it in the foreground (prod-sim runs it as a service it can reload and restart)."""
    nginx = ensure_nginx()
    folder = _prepare_folder()
    cert, key = cert_key or write_self_signed_rsa_cert(folder)
    https_port, http_port = free_port(), free_port()
    site = folder / "aiemaily.conf"
    site.write_text(render_site(_site_replacements(folder, cert, key, https_port, http_port, upstream_port,
                                                   static_root)))
    conf = folder / "nginx.conf"
    conf.write_text(main_conf(folder, site))
    subprocess.run([nginx, "-t", "-q", "-c", str(conf), "-g", f"pid {folder / 'nginx.pid'};"], check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)
    argv = [nginx, "-c", str(conf), "-g", f"daemon off; pid {folder / 'nginx.pid'};"]
    return RunningNginx(https_port, http_port, folder, cert, static_root or folder / "static"), argv


@contextmanager
def running_nginx(upstream_port: int | list[int], *, cert_key: tuple[Path, Path] | None = None,
                  static_root: Path | None = None) -> Iterator[RunningNginx]:
    """nginx in front of one or several upstream ports; by default with a throwaway self-signed RSA
    certificate and a stand-in static folder, or with the given certificate and collectstatic output."""
    site, argv = nginx_site(upstream_port, cert_key=cert_key, static_root=static_root)
    folder = site.folder
    # Std streams redirected: nginx must not hold a pipe of ours open (the run would hang on it).
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(site.https_port, process, folder / "error.log")
        yield site
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful stop of master and workers
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        shutil.rmtree(folder, ignore_errors=True)


def openssl_client(port: int, *args: str, timeout: float = 10) -> subprocess.CompletedProcess:
    """`openssl s_client` that is willing to speak anything: an empty config (no distro minimum)
    and security level 0 (OpenSSL 3 refuses TLS 1.0/1.1 above it), so a refusal is the server's."""
    empty_conf = Path(tempfile.gettempdir()) / "aiemaily-openssl-empty.cnf"
    empty_conf.write_text("")
    env = dict(os.environ, OPENSSL_CONF=str(empty_conf))
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", SERVER_NAME, *args]
    return subprocess.run(cmd, input="", capture_output=True, text=True, timeout=timeout, env=env)
