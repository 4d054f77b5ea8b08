"""Filling IMAP/SMTP settings from an address: bundled providers, a domain's own autoconfig file
(served by a real local HTTPS server), the outbound guard, hostile answers, the endpoint and the form."""

import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.cache import cache
from django.test import Client
from playwright.sync_api import expect

from mail import autoconfig
from mail.web.forms import ImapConnectionForm
from tests.harness.browser_fixtures import sign_in
from tests.harness.factories import UserFactory
from tests.project.test_browser_csp import browser, page  # noqa: F401 - shared browser fixtures

CONFIG = b"""<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="example.test">
    <domain>example.test</domain>
    <incomingServer type="pop3">
      <hostname>pop.example.test</hostname><port>995</port><socketType>SSL</socketType>
    </incomingServer>
    <incomingServer type="imap">
      <hostname>imap.example.test</hostname><port>143</port><socketType>STARTTLS</socketType>
      <username>%EMAILLOCALPART%</username>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>smtp.example.test</hostname><port>587</port><socketType>STARTTLS</socketType>
      <username>%EMAILADDRESS%</username>
    </outgoingServer>
  </emailProvider>
</clientConfig>
"""
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<clientConfig><emailProvider><incomingServer type="imap"><hostname>&lol3;</hostname></incomingServer>
</emailProvider></clientConfig>"""


class AutoconfigSite:
    """A domain's web server: answers each path with what the test put there, and records every request."""

    def __init__(self, test_ca):
        self.routes: dict[str, tuple[int, bytes, float]] = {}
        self.hits: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 - the http.server API
                site.hits.append(self.path)
                status, body, pause = site.routes.get(self.path.split("?")[0], (404, b"", 0))
                self.send_response(status)
                if status in (301, 302):
                    self.send_header("Location", "https://169.254.169.254/latest/meta-data/")
                self.send_header("Content-Type", "application/xml")
                self.end_headers()
                for index in range(0, len(body), 64):
                    self.wfile.write(body[index:index + 64])
                    self.wfile.flush()
                    time.sleep(pause)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(test_ca.cert_file, test_ca.key_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"https://localhost:{self.port}{path}"


@pytest.fixture
def site(test_ca, settings):
    settings.AIEMAILY_AUTOCONFIG_CA_BUNDLE = str(test_ca.ca_file)
    settings.AIEMAILY_ALLOWED_PRIVATE_HOSTS = ["localhost", "127.0.0.1"]
    server = AutoconfigSite(test_ca)
    yield server
    server.server.shutdown()


def test_common_providers_are_bundled_and_need_no_network():
    found = autoconfig.bundled_settings("Someone@FastMail.com")
    assert found.source == "bundled"
    assert (found.imap.host, found.imap.port, found.imap.security) == ("imap.fastmail.com", 993, "tls")
    assert (found.smtp.host, found.smtp.port, found.smtp.security) == ("smtp.fastmail.com", 465, "tls")
    assert found.username == "Someone@FastMail.com"
    assert autoconfig.bundled_settings("someone@unknown-domain.example") is None
    assert autoconfig.bundled_settings("not an address") is None


def test_a_domains_autoconfig_file_fills_imap_and_smtp(site):
    site.routes["/mail/config-v1.1.xml"] = (200, CONFIG, 0)
    found = autoconfig.domain_settings("jane@example.test", urls=[site.url("/mail/config-v1.1.xml")])
    assert found.source == "autoconfig"
    assert found.imap == autoconfig.Server("imap.example.test", 143, "starttls")  # the IMAP one, not POP3
    assert found.smtp == autoconfig.Server("smtp.example.test", 587, "starttls")
    assert found.username == "jane"  # %EMAILLOCALPART%
    # Unlike Thunderbird, the address is not sent to the domain.
    assert site.hits == ["/mail/config-v1.1.xml"]


def test_the_second_convention_is_tried_when_the_first_fails(site):
    site.routes["/.well-known/autoconfig/mail/config-v1.1.xml"] = (200, CONFIG, 0)
    found = autoconfig.domain_settings("jane@example.test", urls=[
        site.url("/mail/config-v1.1.xml"), site.url("/.well-known/autoconfig/mail/config-v1.1.xml")])
    assert found.imap.host == "imap.example.test"
    assert site.hits == ["/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"]


def test_the_urls_follow_the_autoconfig_conventions():
    assert autoconfig.autoconfig_urls("example.test") == [
        "https://autoconfig.example.test/mail/config-v1.1.xml",
        "https://example.test/.well-known/autoconfig/mail/config-v1.1.xml"]


def test_a_private_destination_is_refused_before_any_request(site, settings):
    site.routes["/mail/config-v1.1.xml"] = (200, CONFIG, 0)
    settings.AIEMAILY_ALLOWED_PRIVATE_HOSTS = []
    assert autoconfig.domain_settings("jane@example.test", urls=[site.url("/mail/config-v1.1.xml")]) is None
    assert site.hits == []


def test_redirects_are_not_followed(site):
    site.routes["/mail/config-v1.1.xml"] = (302, b"", 0)
    assert autoconfig.domain_settings("jane@example.test", urls=[site.url("/mail/config-v1.1.xml")]) is None
    assert site.hits == ["/mail/config-v1.1.xml"]  # nothing fetched from the redirect target


def test_entity_expansion_and_oversized_answers_are_refused(site):
    site.routes["/laughs.xml"] = (200, BILLION_LAUGHS, 0)
    site.routes["/huge.xml"] = (200, CONFIG + b"<!--" + b"x" * (autoconfig.MAX_BYTES + 10) + b"-->", 0)
    assert autoconfig.domain_settings("jane@example.test", urls=[site.url("/laughs.xml")]) is None
    assert autoconfig.domain_settings("jane@example.test", urls=[site.url("/huge.xml")]) is None


def test_a_trickling_server_hits_the_total_deadline(site, monkeypatch):
    monkeypatch.setattr(autoconfig, "DEADLINE_SECONDS", 1.0)
    site.routes["/slow.xml"] = (200, CONFIG, 0.3)  # a chunk every 0.3 s: each read is quick, the whole is not
    started = time.monotonic()
    assert autoconfig.domain_settings("jane@example.test", urls=[site.url("/slow.xml")]) is None
    assert time.monotonic() - started < 4


@pytest.mark.parametrize("xml", [
    b"<clientConfig><emailProvider><incomingServer type='imap'><hostname>h</hostname><port>99999</port>"
    b"<socketType>SSL</socketType></incomingServer></emailProvider></clientConfig>",
    b"<clientConfig><emailProvider/></clientConfig>",
    b"<notAConfig/>",
    b"not xml at all <",
])
def test_malformed_configs_give_nothing(xml):
    assert autoconfig.parse_config(xml, "jane@example.test") is None


@pytest.mark.django_db
def test_the_endpoint_answers_signed_in_users_with_json(settings):
    settings.AIEMAILY_ALLOWED_PRIVATE_HOSTS = []
    anonymous = Client().get("/connections/autoconfig?email=a@fastmail.com")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]

    client = Client()
    client.force_login(UserFactory())
    answer = client.get("/connections/autoconfig?email=a@fastmail.com").json()
    assert answer["found"] is True and answer["imap"]["host"] == "imap.fastmail.com"
    assert client.get("/connections/autoconfig?email=nonsense").status_code == 400
    assert client.post("/connections/autoconfig?email=a@fastmail.com").status_code == 405


@pytest.mark.django_db
def test_domain_lookups_are_limited_per_user(settings):
    settings.AIEMAILY_ALLOWED_PRIVATE_HOSTS = []  # every lookup of these addresses is refused by the guard
    cache.clear()
    client = Client()
    client.force_login(UserFactory())
    statuses = [client.get(f"/connections/autoconfig?email=u{n}@127.0.0.1").status_code
                for n in range(autoconfig_limit() + 1)]
    assert statuses[:-1] == [200] * autoconfig_limit()
    assert statuses[-1] == 429
    # Bundled providers need no lookup and are never limited.
    assert client.get("/connections/autoconfig?email=a@fastmail.com").status_code == 200


def autoconfig_limit() -> int:
    from mail.web.autoconfig import LOOKUPS_PER_MINUTE

    return LOOKUPS_PER_MINUTE


def _form(**changes):
    data = {"email": "jane@example.test", "imap_host": "localhost", "imap_port": 993, "imap_security": "tls",
            "imap_password": "imap secret", "smtp_host": "localhost", "smtp_port": 465,
            "smtp_security": "tls", "smtp_same_password": "on"}
    data.update(changes)
    return ImapConnectionForm(data={k: v for k, v in data.items() if v is not None})


@pytest.mark.django_db
def test_one_password_and_default_user_names_fill_the_connection(settings):
    settings.AIEMAILY_ALLOWED_PRIVATE_HOSTS = ["localhost"]
    form = _form()
    assert form.is_valid(), form.errors
    validated = form.cleaned_data["validated"]
    assert validated["imap"]["username"] == validated["smtp"]["username"] == "jane@example.test"
    assert validated["smtp"]["password"].reveal() == validated["imap"]["password"].reveal() == "imap secret"


@pytest.mark.django_db
def test_a_separate_smtp_password_is_required_when_not_shared(settings):
    settings.AIEMAILY_ALLOWED_PRIVATE_HOSTS = ["localhost"]
    form = _form(smtp_same_password=None)
    assert not form.is_valid()
    assert "smtp_password" in form.errors
    form = _form(smtp_same_password=None, smtp_password="other secret", smtp_username="jane.smtp")
    assert form.is_valid(), form.errors
    assert form.cleaned_data["validated"]["smtp"]["username"] == "jane.smtp"
    assert form.cleaned_data["validated"]["smtp"]["password"].reveal() == "other secret"


@pytest.mark.usefixtures("transactional_db")
def test_the_form_fills_itself_in_the_browser(page, live_server):  # noqa: F811 - the shared browser fixture
    from tests.project.test_browser_csp import violations

    sign_in(page, live_server.url, UserFactory())

    page.goto(live_server.url + "/connections/add/imap/")
    page.fill("input[name=smtp_host]", "my.own.smtp")  # typed by the user: must survive the lookup
    page.fill("input[name=email]", "someone@fastmail.com")
    page.press("input[name=email]", "Tab")
    # Polled from Python: a string predicate would be eval'd in the page, which its CSP forbids.
    expect(page.locator("input[name=imap_host]")).to_have_value("imap.fastmail.com")
    assert page.input_value("select[name=imap_security]") == "tls"
    assert page.input_value("input[name=smtp_port]") == "465"
    assert page.input_value("input[name=smtp_host]") == "my.own.smtp"
    assert "filled in for this provider" in page.inner_text("[data-autoconfig-status]")
    # One password until the user says SMTP differs.
    assert page.is_hidden("input[name=smtp_password]")
    page.uncheck("input[name=smtp_same_password]")
    assert page.is_visible("input[name=smtp_password]")
    assert violations(page) == []
