"""Connecting to user-supplied IMAP and SMTP servers, safely, with errors a person can act on.

Every connection goes to an address vetted by the SSRF guard (aiemaily/security/netguard.py): we
connect to exactly that IP and pass the host name only for TLS SNI and certificate checks, so a
DNS answer that changes between check and connect cannot redirect us. TLS is verified against the
system trust store (or AIEMAILY_MAIL_CA_BUNDLE), TLS 1.2 at least. Plaintext is allowed only for
hosts the operator allow-listed (AIEMAILY_ALLOWED_PRIVATE_HOSTS; a local test mailbox).
"""

import imaplib
import smtplib
import ssl
from contextlib import contextmanager

from django.conf import settings

from aiemaily.security import netguard
from secrets_vault.crypto import SecretStr

TIMEOUT = 20
# How servers word a refused login (RFC 5530 response code first, then common free-text forms).
_AUTH_FAILURES = ("[authenticationfailed]", "authentication failed", "invalid credentials", "login failed",
                  "[authorizationfailed]")


class MailServerError(Exception):
    """A failure to connect or log in, with a code and a message fit to show the user.

    Messages never contain the password or anything the server sent back verbatim.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=getattr(settings, "AIEMAILY_MAIL_CA_BUNDLE", None) or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _vet(host: str, port: int, security: str) -> netguard.VettedAddress:
    try:
        vetted = netguard.vet_host(host, port)
    except netguard.BlockedDestination:
        raise MailServerError("blocked", f"{host} resolves to a private or reserved address; "
                                         "Aiemaily does not connect there.") from None
    except OSError:
        raise MailServerError("unreachable", f"{host} could not be found (DNS lookup failed).") from None
    if security == "none" and not netguard.is_plaintext_allowed(host):
        raise MailServerError("tls_required", "Unencrypted connections are only allowed to local test servers.")
    return vetted


class _GuardedIMAP4(imaplib.IMAP4):
    def __init__(self, vetted: netguard.VettedAddress, timeout: float):
        self._vetted = vetted
        super().__init__(vetted.host, vetted.port, timeout)

    def _create_socket(self, timeout):
        return netguard.create_connection(self._vetted, timeout)


class _GuardedIMAP4_SSL(imaplib.IMAP4_SSL):  # noqa: N801 - mirrors imaplib's name
    def __init__(self, vetted: netguard.VettedAddress, timeout: float):
        self._vetted = vetted
        super().__init__(vetted.host, vetted.port, ssl_context=ssl_context(), timeout=timeout)

    def _create_socket(self, timeout):
        sock = netguard.create_connection(self._vetted, timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self._vetted.host)


class _DataTracking:
    """Remembers whether the server invited the message body (354 to DATA).

    From then on the server may hold the message, so a send that fails later is not known to have
    failed (mail/send/outbox.py). 354 answers nothing but DATA, so the reply code alone tells.
    """

    data_started = False

    def getreply(self):
        code, message = super().getreply()
        if code == 354:
            self.data_started = True
        return code, message


class _GuardedSMTP(_DataTracking, smtplib.SMTP):
    def __init__(self, vetted: netguard.VettedAddress, timeout: float):
        self._vetted = vetted
        super().__init__(timeout=timeout)
        self._host = vetted.host

    def _get_socket(self, host, port, timeout):
        return netguard.create_connection(self._vetted, timeout)


class _GuardedSMTP_SSL(_DataTracking, smtplib.SMTP_SSL):  # noqa: N801
    def __init__(self, vetted: netguard.VettedAddress, timeout: float):
        self._vetted = vetted
        super().__init__(timeout=timeout, context=ssl_context())
        self._host = vetted.host

    def _get_socket(self, host, port, timeout):
        sock = netguard.create_connection(self._vetted, timeout)
        return self.context.wrap_socket(sock, server_hostname=self._vetted.host)


@contextmanager
def _translated_errors(kind: str, host: str):
    label = kind.upper()
    try:
        yield
    except MailServerError:
        raise
    except ssl.SSLCertVerificationError:
        raise MailServerError("tls_failed", f"{label} server {host} presented a certificate that is not valid "
                                            "for this name or not trusted.") from None
    except ssl.SSLError:
        raise MailServerError("tls_failed", f"TLS with the {label} server {host} failed: check the port and "
                                            "the security setting (TLS vs. STARTTLS).") from None
    except smtplib.SMTPAuthenticationError as exc:
        if 400 <= exc.smtp_code < 500:
            raise MailServerError("unavailable", f"The {label} server could not check the password right now; "
                                                 "try again later.") from None
        raise MailServerError("auth_failed", f"The {label} server rejected the user name or password.") from None
    except imaplib.IMAP4.error as exc:
        text = str(exc).lower()
        if "[unavailable]" in text or "temporary" in text:
            raise MailServerError("unavailable", f"The {label} server could not check the password right now; "
                                                 "try again later.") from None
        if any(marker in text for marker in _AUTH_FAILURES):
            raise MailServerError("auth_failed", f"The {label} server rejected the user name or password.") from None
        raise MailServerError("protocol", f"The {label} server answered unexpectedly.") from None
    except smtplib.SMTPNotSupportedError:
        raise MailServerError("tls_failed", f"The {label} server does not offer STARTTLS.") from None
    except smtplib.SMTPException:
        raise MailServerError("protocol", f"The {label} server answered unexpectedly.") from None
    except TimeoutError:
        raise MailServerError("unreachable", f"{label} server {host} did not answer in time.") from None
    except ConnectionRefusedError:
        raise MailServerError("unreachable", f"{label} server {host} refused the connection "
                                             "(nothing listening on that port).") from None
    except OSError:
        raise MailServerError("unreachable", f"{label} server {host} could not be reached.") from None


@contextmanager
def imap_session(host: str, port: int, security: str, username: str, password: SecretStr, timeout=TIMEOUT):
    """A logged-in imaplib session; logged out on exit."""
    with _translated_errors("imap", host):
        vetted = _vet(host, port, security)
        conn = _GuardedIMAP4_SSL(vetted, timeout) if security == "tls" else _GuardedIMAP4(vetted, timeout)
        try:
            if security == "starttls":
                conn.starttls(ssl_context())
            conn.login(username, password.reveal())
            yield conn
        finally:
            try:
                conn.logout()
            except (imaplib.IMAP4.error, OSError):
                pass


@contextmanager
def smtp_session(host: str, port: int, security: str, username: str, password: SecretStr, timeout=TIMEOUT):
    """A logged-in smtplib session; closed on exit."""
    with _translated_errors("smtp", host):
        vetted = _vet(host, port, security)
        conn = _GuardedSMTP_SSL(vetted, timeout) if security == "tls" else _GuardedSMTP(vetted, timeout)
        try:
            conn.connect(host, port)
            conn.ehlo()
            if security == "starttls":
                conn.starttls(context=ssl_context())
                conn.ehlo()
            conn.login(username, password.reveal())
            yield conn
        finally:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()


def verify_imap(host, port, security, username, password: SecretStr) -> None:
    with imap_session(host, port, security, username, password) as conn:
        status, _ = conn.select("INBOX", readonly=True)
        if status != "OK":
            raise MailServerError("protocol", "Logged in to IMAP, but the INBOX could not be opened.")


def verify_smtp(host, port, security, username, password: SecretStr) -> None:
    with smtp_session(host, port, security, username, password):
        pass


class GuardedIMAPClient:
    """imapclient.IMAPClient connected to a vetted address (built lazily: imported only by sync)."""

    @staticmethod
    def connect(vetted: netguard.VettedAddress, security: str, timeout: float):
        import imapclient  # start-up cost: only worker-sync and idle open IMAP sessions

        class _Client(imapclient.IMAPClient):
            def _create_IMAP4(self):  # noqa: N802 - imapclient's hook name
                connect_timeout = getattr(self._timeout, "connect", None) or timeout
                if self.ssl:
                    return _GuardedIMAP4_SSL(vetted, connect_timeout)
                return _GuardedIMAP4(vetted, connect_timeout)

        return _Client(vetted.host, port=vetted.port, ssl=security == "tls", ssl_context=ssl_context(),
                       timeout=timeout)


@contextmanager
def imap_client(host: str, port: int, security: str, username: str, password: SecretStr, timeout=60):
    """A logged-in imapclient session (CONDSTORE/QRESYNC, pipelined FETCH); logged out on exit."""
    with _translated_errors("imap", host):
        vetted = _vet(host, port, security)
        client = GuardedIMAPClient.connect(vetted, security, timeout)
        try:
            if security == "starttls":
                client.starttls(ssl_context())
            client.login(username, password.reveal())
            yield client
        finally:
            try:
                client.logout()
            except (imaplib.IMAP4.error, OSError):
                pass
