"""Security headers on every kind of response, CSP nonce discipline, cookies, and `check --deploy`.

Each page kind goes through a different code path (a template, DRF, a JSON error handler, Django's
404 handler, WhiteNoise for static files, the admin, the health check, the CSP report view), and a
header set in one path is easily missing from another: so every kind is requested and checked.
"""

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import Client, override_settings

from tests.harness.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.claim("csp")]

TEMPLATES_DIR = Path(settings.BASE_DIR) / "templates"
NONCE_IN_HEADER = re.compile(r"'nonce-([A-Za-z0-9+/=]+)'")
COMMON_HEADERS = {
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains; preload",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
REQUIRED_PERMISSIONS = ("camera=()", "microphone=()", "geolocation=()", "payment=()", "usb=()")


def parse_csp(header: str) -> dict[str, list[str]]:
    policy = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            policy[words[0]] = words[1:]
    return policy


class HttpsClient(Client):
    """Every request as if over HTTPS: HSTS is only sent on secure requests (nginx terminates TLS)."""

    def generic(self, *args, **kwargs):
        kwargs["secure"] = True
        return super().generic(*args, **kwargs)


def _client() -> Client:
    return HttpsClient()


def _html_page(client):
    return client.get("/")


def _login_page(client):
    return client.get("/accounts/login/")


def _api_json(client):
    user = UserFactory()
    return client.post("/api/v1/auth/token", {"email": user.email, "password": DEFAULT_PASSWORD},
                       content_type="application/json")


def _api_error(client):
    return client.post("/api/v1/auth/token", {"email": "nobody@example.test", "password": "wrong wrong"},
                       content_type="application/json")


def _api_404(client):
    return client.get("/api/v1/no-such-endpoint")


def _html_404(client):
    return client.get("/no-such-page/")


def _static_file(client):
    return client.get("/static/js/app.js")


def _admin_login(client):
    return client.get("/admin/login/")


def _health(client):
    return client.get("/healthz")


def _csp_report(client):
    body = b'{"csp-report": {"document-uri": "https://aiemaily.example/", "effective-directive": "img-src"}}'
    return client.post("/csp-report", body, content_type="application/csp-report", REMOTE_ADDR="198.51.100.77")


PAGES = {
    "html page": (_html_page, 200, "text/html"),
    "html form page": (_login_page, 200, "text/html"),
    "api json": (_api_json, 200, "application/json"),
    "api error": (_api_error, 401, "application/json"),
    "api 404": (_api_404, 404, "application/json"),
    "html 404": (_html_404, 404, "text/html"),
    "static file": (_static_file, 200, "text/javascript"),
    "admin login": (_admin_login, 200, "text/html"),
    "health check": (_health, 200, "application/json"),
    "csp report": (_csp_report, 204, None),
}


@pytest.fixture(params=sorted(PAGES))
def page(request):
    fetch, status, content_type = PAGES[request.param]
    response = fetch(_client())
    assert response.status_code == status, (request.param, response.status_code)
    if content_type:
        assert response["Content-Type"].startswith(content_type)
    response.kind = request.param
    return response


def test_every_kind_of_response_carries_the_common_security_headers(page):
    for name, value in COMMON_HEADERS.items():
        assert page.get(name) == value, (page.kind, name, page.get(name))


def test_every_kind_of_response_turns_off_powerful_features(page):
    policy = [item.strip() for item in page["Permissions-Policy"].split(",")]
    for feature in REQUIRED_PERMISSIONS:
        assert feature in policy, (page.kind, feature)
    # Every listed feature is denied to every origin, including our own.
    assert all(item.endswith("=()") for item in policy)


def test_every_kind_of_response_has_a_csp_that_forbids_inline_script_and_framing(page):
    policy = parse_csp(page["Content-Security-Policy"])
    sources = [source for values in policy.values() for source in values]
    assert "'unsafe-inline'" not in sources and "'unsafe-eval'" not in sources, page.kind
    assert policy.get("frame-ancestors") == ["'none'"], page.kind
    assert policy["base-uri"] == ["'none'"], page.kind
    script = policy.get("script-src", policy["default-src"])
    assert "*" not in script and "https:" not in script and "data:" not in script, page.kind


def test_app_pages_get_the_full_policy():
    response = _client().get("/accounts/login/")
    policy = parse_csp(response["Content-Security-Policy"])
    # Deny by default; each resource kind our pages use is allowed by its own directive.
    assert policy["default-src"] == ["'none'"]
    for directive in ("script-src", "style-src", "img-src", "font-src", "connect-src"):
        assert "'self'" in policy[directive], directive
    assert policy["object-src"] == ["'none'"]
    assert policy["form-action"] == ["'self'"]
    assert policy["connect-src"] == ["'self'", *settings.AIEMAILY_CSP_CONNECT_SRC]
    assert policy["script-src-attr"] == ["'none'"]
    assert policy["report-uri"] == ["/csp-report"]
    assert policy["report-to"] == ["csp-endpoint"]
    assert response["Reporting-Endpoints"] == 'csp-endpoint="/csp-report"'


def test_static_files_get_a_deny_all_policy():
    policy = parse_csp(_client().get("/static/js/app.js")["Content-Security-Policy"])
    assert policy["default-src"] == ["'none'"]


@pytest.mark.parametrize("path", ["/", "/accounts/login/", "/accounts/signup/", "/no-such-page/", "/admin/login/"])
def test_html_scripts_carry_the_nonce_of_their_response_and_strict_dynamic_never_appears(path):
    response = _client().get(path)
    header = response["Content-Security-Policy"]
    # NOTES.md: 'strict-dynamic' without a nonce would block every script on a page that has none.
    assert "'strict-dynamic'" not in header
    html = response.content.decode()
    scripts = re.findall(r"<script\b[^>]*>", html)
    nonces = NONCE_IN_HEADER.findall(header)
    for tag in scripts:
        assert "src=" in tag, f"inline script on {path}: {tag}"
        if "nonce=" in tag:
            assert nonces and f'nonce="{nonces[0]}"' in tag, (path, tag)


def test_each_response_gets_a_fresh_nonce():
    first = NONCE_IN_HEADER.findall(_client().get("/")["Content-Security-Policy"])
    second = NONCE_IN_HEADER.findall(_client().get("/")["Content-Security-Policy"])
    assert first and second and first != second
    assert len(first[0]) >= 22  # 128 bits, base64


def test_templates_carry_no_inline_script_handlers_styles_or_javascript_urls():
    inline_handler = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)
    inline_script = re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
    style_attribute = re.compile(r"<[^>]+\sstyle\s*=", re.IGNORECASE)
    offences = []
    for path in TEMPLATES_DIR.rglob("*.html"):
        text = path.read_text()
        for name, pattern in (("handler", inline_handler), ("inline script", inline_script),
                              ("style attribute", style_attribute)):
            if pattern.search(text):
                offences.append(f"{path.relative_to(TEMPLATES_DIR)}: {name}")
        if "javascript:" in text.lower():
            offences.append(f"{path.relative_to(TEMPLATES_DIR)}: javascript: URL")
    assert offences == []


def test_cookies_are_host_prefixed_secure_httponly_and_samesite():
    client = _client()
    csrf = client.get("/accounts/login/").cookies["__Host-csrftoken"]
    user = UserFactory()
    response = client.post("/accounts/login/", {"username": user.email, "password": DEFAULT_PASSWORD,
                                                "csrfmiddlewaretoken": csrf.value})
    assert response.status_code == 302
    session = response.cookies["__Host-sessionid"]
    for cookie, samesite in ((csrf, "Strict"), (session, "Lax")):
        # __Host-: browsers accept it only when Secure, Path=/ and without Domain.
        assert cookie["secure"] is True and cookie["httponly"] is True
        assert cookie["samesite"] == samesite
        assert cookie["path"] == "/" and cookie["domain"] == ""


def test_hsts_is_two_years_with_subdomains_and_preload():
    assert settings.SECURE_HSTS_SECONDS >= 2 * 365 * 24 * 3600
    assert settings.SECURE_HSTS_INCLUDE_SUBDOMAINS and settings.SECURE_HSTS_PRELOAD


def test_check_deploy_is_clean_with_the_production_redirect():
    # The test profile is production minus the HTTP->HTTPS redirect (tests speak plain HTTP);
    # put that back and Django's deployment checks must report nothing at WARNING or above.
    with override_settings(SECURE_SSL_REDIRECT=True):
        call_command("check", "--deploy", "--fail-level", "WARNING", verbosity=0)


def test_connect_src_setting_rejects_smuggled_keywords():
    from aiemaily.settings import security as settings_module

    for bad in ("https://a.example; script-src *", "'unsafe-inline'", "http://plain.example", "https://*.example"):
        with pytest.raises(ImproperlyConfigured):
            settings_module.https_origins("AIEMAILY_CSP_CONNECT_SRC", [bad])
    assert settings_module.https_origins("AIEMAILY_CSP_CONNECT_SRC", ["https://api.openai.com"]) == ["https://api.openai.com"]
