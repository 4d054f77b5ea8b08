"""Real mail servers for the tests: Dovecot (IMAP) and aiosmtpd (SMTP), with TLS from a test CA.

Dovecot runs from the Debian package with its own configuration in a temporary folder (see
../shared/NOTES.md); it is installed with apt-get when missing and we run as root. Users are added
to a passwd-file that Dovecot's passdb is static: every user name logs in with the
server's one (random, per run) password, and each test uses a fresh user name, hence its own mailbox.
(A passwd-file that tests append to is re-read by Dovecot at most once per second: flaky.)
"""

import datetime
import ipaddress
import os
import pwd
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness.system import free_port, require_tool


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class TestCA:
    """A CA the tests trust, a server certificate for localhost/127.0.0.1, and an untrusted one."""

    folder: Path
    ca_file: Path = field(init=False)
    cert_file: Path = field(init=False)
    key_file: Path = field(init=False)
    untrusted_cert_file: Path = field(init=False)
    untrusted_key_file: Path = field(init=False)

    def __post_init__(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (x509.CertificateBuilder().subject_name(_name("Aiemaily Test CA")).issuer_name(_name("Aiemaily Test CA"))
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
        self.ca_file = self.folder / "ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file, self.key_file = self._leaf(ca, ca_key, "server", now)
        self_key = ec.generate_private_key(ec.SECP256R1())
        self.untrusted_cert_file, self.untrusted_key_file = self._leaf(None, self_key, "untrusted", now)

    def _leaf(self, issuer, issuer_key, name, now):
        key = ec.generate_private_key(ec.SECP256R1()) if issuer is not None else issuer_key
        san = x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                           x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        cert = (x509.CertificateBuilder().subject_name(_name("localhost"))
                .issuer_name(issuer.subject if issuer is not None else _name("localhost"))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(san, critical=False).sign(issuer_key, hashes.SHA256()))
        cert_file, key_file = self.folder / f"{name}.pem", self.folder / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key))
        key_file.chmod(0o644)  # read by dovecot's unprivileged login processes in the test folder
        return cert_file, key_file


DOVECOT_CONF = """
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
ssl_dh = </usr/share/dovecot/dh.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
mail_uid = {uid}
mail_gid = {gid}
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
"""


def _ensure_vmail() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("vmail")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "vmail"],
                       check=True, capture_output=True)
        entry = pwd.getpwnam("vmail")
    return entry.pw_uid, entry.pw_gid


# Many simultaneous sessions (benchmarks/bench_idle.py: 500 IDLE watchers). Dovecot's defaults allow
# 100 processes per service; the login service moves to its high-performance mode (a few processes
# each proxying many TLS sessions) instead of one process per session, and each session's imap process
# counts against the log and anvil services' client limits.
DOVECOT_SCALE_CONF = """
default_client_limit = {clients}
service imap-login {{
  service_count = 0
  process_min_avail = 2
  client_limit = {clients}
}}
service imap {{
  process_limit = {sessions}
}}
"""


class Dovecot:
    def __init__(self, root: Path, ca: TestCA, *, sessions: int | None = None):
        require_tool("dovecot-imapd")
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        uid, gid = _ensure_vmail()
        for sub in ("run", "state", "mail"):
            (root / sub).mkdir(exist_ok=True)
        os.chown(root / "mail", uid, gid)
        self.password = f"Canary-Dovecot-{uuid.uuid4().hex}"
        self.imap_port, self.imaps_port = free_port(), free_port()
        self.conf = root / "dovecot.conf"
        self.conf.write_text(DOVECOT_CONF.format(
            root=root, cert=ca.cert_file, key=ca.key_file, uid=uid, gid=gid, password=self.password,
            imap_port=self.imap_port, imaps_port=self.imaps_port,
        ) + (DOVECOT_SCALE_CONF.format(sessions=sessions + 50, clients=4 * sessions + 200) if sessions else ""))
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait(self.imap_port)
        self._wait(self.imaps_port)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the server (its IMAP sessions get BYE and are closed) and start it again on the same
        ports, as an operator's restart does."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def _wait(self, port: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("dovecot exited: " + (self.root / "dovecot.log").read_text()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("dovecot did not start")

    def add_user(self) -> tuple[str, str]:
        """A fresh user name (its maildir is created on first login) and the server's password."""
        return f"user-{uuid.uuid4().hex[:10]}@example.test", self.password

    def seed(self, user: str, messages: list[bytes], *, seen_every: int = 3) -> None:
        """Write messages straight into the user's INBOX maildir (far faster than APPEND)."""
        uid, gid = _ensure_vmail()
        maildir = self.root / "mail" / user
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
            os.chown(maildir / sub, uid, gid)
        os.chown(maildir, uid, gid)
        stamp = int(time.time())
        for number, raw in enumerate(messages):
            flags = "S" if seen_every and number % seen_every == 0 else ""
            path = maildir / "cur" / f"{stamp}.M{number}P{os.getpid()}.seed:2,{flags}"
            path.write_bytes(raw)
            os.chown(path, uid, gid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def sample_messages(count: int, *, malformed: bool = True) -> list[bytes]:
    """`count` ordinary messages, plus (when asked) the malformed kinds real mailboxes contain."""
    messages = [
        (f"From: Sender {n} <sender{n}@example.test>\r\nTo: you@example.test\r\n"
         f"Subject: Message number {n}\r\nDate: Mon, 2 Nov 2026 10:{n % 60:02d}:00 +0000\r\n"
         f"Message-ID: <m{n}.{uuid.uuid4().hex[:8]}@example.test>\r\nContent-Type: text/plain; charset=utf-8\r\n"
         f"\r\nHello, this is body {n}. " + "Lorem ipsum dolor sit amet. " * 40 + "\r\n").encode()
        for n in range(count)
    ]
    if malformed:
        messages += MALFORMED
    return messages


MALFORMED = [
    b"Subject: =?x-unknown-charset?Q?caf=E9?=\r\nFrom: a@b\r\nContent-Type: text/plain; charset=x-bogus\r\n\r\n"
    b"caf\xe9 body with an unknown charset\r\n",
    b"Subject: broken multipart\r\nContent-Type: multipart/mixed; boundary=\"zzz\"\r\n\r\n--zzz\r\n"
    b"Content-Type: text/plain\r\n\r\nfirst part, never closed\r\n--zz",
    b"Subject: " + b"A" * 20000 + b"\r\nFrom: huge@example.test\r\n\r\nhuge header\r\n",
    b"Subject: 8-bit \xc3\xa9t\xe9 in a header\r\nFrom: \xff\xfe <weird@example.test>\r\n\r\nbody\r\n",
    b"no headers at all, just text\r\n",
    b"Date: not a date\r\nFrom: <<<>>>\r\nTo: ,,,@@@\r\nSubject: bad addresses\r\n\r\nx\r\n",
    b"Subject: html only\r\nContent-Type: text/html\r\n\r\n<p onclick=alert(1)>hi<script>alert(2)</script></p>\r\n",
]


class SmtpServer:
    """aiosmtpd with AUTH: STARTTLS on one port, implicit TLS on another; counts deliveries.

    `behaviour` makes it misbehave after DATA the way real servers and networks do (see
    ../shared/NOTES.md): "answer_late" stores the message and answers 250 only after `late_seconds`,
    "close_after_store" stores it and hangs up without answering, "drop_during_data" hangs up after
    the message's header block, before the end of data (nothing stored). `filing`, when set, gets
    the bytes the server received (all of them, or the header block it got before dropping), as a
    server that files sent mail in the user's Sent folder would. "refuse" answers the end of data
    with 554 and stores nothing.
    """

    BEHAVIOURS = ("answer_late", "close_after_store", "drop_during_data", "refuse")

    def __init__(self, ca: TestCA):
        import asyncio
        import ssl

        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP, AuthResult

        self.users: dict[str, str] = {}
        self.messages: list = []
        self.on_data = None  # a test's hook, called once the message is stored, before "250 OK" goes out
        self.behaviour: str | None = None
        self.late_seconds = 5.0
        self.filing = None
        server = self

        class Handler:
            async def handle_DATA(self, smtp, session, envelope):  # noqa: N802 - aiosmtpd's hook name
                if server.behaviour == "refuse":
                    return "554 5.7.1 Message refused"
                server.messages.append(envelope)
                if server.filing is not None:
                    server.filing(envelope.original_content)
                if server.on_data is not None:
                    server.on_data()
                if server.behaviour == "close_after_store":
                    smtp.transport.close()
                    await asyncio.sleep(60)  # cancelled by aiosmtpd once the connection is gone
                elif server.behaviour == "answer_late":
                    await asyncio.sleep(server.late_seconds)
                return "250 OK"

        class MisbehavingSMTP(SMTP):
            async def smtp_DATA(self, arg):  # noqa: N802 - aiosmtpd's command handler name
                if server.behaviour != "drop_during_data" or not self.envelope.rcpt_tos:
                    return await super().smtp_DATA(arg)
                await self.push("354 End data with <CR><LF>.<CR><LF>")
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    head += await self._reader.readuntil(b"\r\n")
                if server.filing is not None:
                    server.filing(head)
                self.transport.close()

        class MisbehavingController(Controller):
            def factory(self):
                return MisbehavingSMTP(self.handler, **self.SMTP_kwargs)

        def authenticator(smtp, session, envelope, mechanism, auth_data):
            ok = auth_data is not None and server.users.get(auth_data.login.decode()) == auth_data.password.decode()
            return AuthResult(success=ok, handled=False)

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(ca.cert_file, ca.key_file)
        common = {"authenticator": authenticator, "auth_require_tls": False}
        self.starttls_port, self.tls_port = free_port(), free_port()
        self.starttls = MisbehavingController(Handler(), hostname="127.0.0.1", port=self.starttls_port,
                                              server_kwargs={**common, "tls_context": context})
        self.tls = MisbehavingController(Handler(), hostname="127.0.0.1", port=self.tls_port, ssl_context=context,
                                         server_kwargs=common)
        self.starttls.start()
        self.tls.start()

    def behave(self, behaviour: str | None, *, filing=None, late_seconds: float = 5.0) -> None:
        assert behaviour is None or behaviour in self.BEHAVIOURS, behaviour
        self.behaviour, self.filing, self.late_seconds = behaviour, filing, late_seconds

    def add_user(self, login: str, password: str) -> None:
        self.users[login] = password

    def stop(self) -> None:
        self.starttls.stop()
        self.tls.stop()
