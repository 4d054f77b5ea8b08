"""The signed image proxy: only signed URLs, only public http(s) targets, only raster images, capped.

The "remote" site is a local server on 127.0.0.1. By default the SSRF guard refuses it, and the
tests prove it was never contacted; tests that need a successful fetch list 127.0.0.1 as allowed.
"""

import time
from urllib.parse import urlencode

import pytest
from django.test import Client, override_settings

from aiemaily.security.imageproxy import proxy_url, sign
from tests.harness.browser_fixtures import PNG, remote_image_site

pytestmark = [pytest.mark.django_db, pytest.mark.claim("csp")]

ALLOW_LOCAL = override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=["127.0.0.1"])


@pytest.fixture
def site():
    with remote_image_site() as (base, hits):
        yield base, hits


@pytest.fixture
def client(user):
    client = Client()
    client.force_login(user)
    client.user = user
    return client


def _get(client, url: str, signature: str | None = None):
    query = {"u": url, "s": sign(url, user_id=client.user.pk) if signature is None else signature}
    return client.get("/image-proxy?" + urlencode(query))


def test_login_is_required(site):
    base, hits = site
    response = Client().get(proxy_url(f"{base}/pic.png", user_id=None))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert hits == []


@ALLOW_LOCAL
def test_a_signed_public_image_is_served_with_a_strict_policy(client, site):
    base, hits = site
    response = client.get(proxy_url(f"{base}/pic.png", user_id=client.user.pk))
    assert response.status_code == 200
    assert response.content == PNG
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert hits == ["/pic.png"]


@ALLOW_LOCAL
@pytest.mark.parametrize("tamper", ["unsigned", "bad signature", "other url", "truncated"])
def test_unsigned_or_tampered_requests_are_refused_before_any_fetch(client, site, tamper):
    base, hits = site
    url = f"{base}/pic.png"
    mine = client.user.pk
    signature = {"unsigned": "", "bad signature": "0" * 64, "other url": sign(f"{base}/page.html", user_id=mine),
                 "truncated": sign(url, user_id=mine)[:-2]}[tamper]
    assert _get(client, url, signature).status_code == 403
    assert client.get("/image-proxy").status_code == 403
    assert hits == []


@override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=[])
def test_loopback_targets_are_refused_even_when_signed(client, site):
    base, hits = site
    response = _get(client, f"{base}/pic.png")
    assert response.status_code == 403
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert hits == []


@override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=[])
@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://10.0.0.1/pic.png", "http://192.168.1.1/pic.png", "http://[::1]/pic.png",
    "http://[::ffff:127.0.0.1]/pic.png", "http://0.0.0.0/pic.png", "http://localhost/pic.png",
    "http://2130706433/pic.png",
])
def test_private_and_metadata_targets_are_refused(client, url):
    assert _get(client, url).status_code == 403


@ALLOW_LOCAL
@pytest.mark.parametrize("url", ["ftp://127.0.0.1/pic.png", "file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO",
                                 "http://user:pw@127.0.0.1/pic.png", "javascript:alert(1)", "http:///pic.png"])
def test_only_plain_http_and_https_are_fetched(client, url):
    assert _get(client, url).status_code == 400


@ALLOW_LOCAL
@pytest.mark.parametrize("path", ["/page.html", "/vector.svg"])
def test_non_raster_content_is_not_passed_on(client, site, path):
    base, _ = site
    response = _get(client, base + path)
    assert response.status_code == 415
    assert b"alert" not in response.content


@ALLOW_LOCAL
@override_settings(AIEMAILY_IMAGE_PROXY_MAX_BYTES=1024 * 1024)
@pytest.mark.parametrize("path", ["/huge", "/stream"])
def test_oversized_images_are_refused(client, site, path):
    base, _ = site
    response = _get(client, base + path)
    assert response.status_code == 502
    assert len(response.content) < 1024


@ALLOW_LOCAL
@override_settings(AIEMAILY_IMAGE_PROXY_TIMEOUT=1)
def test_slow_servers_time_out(client, site):
    base, _ = site
    started = time.monotonic()
    response = _get(client, f"{base}/slow")
    assert response.status_code == 504
    assert time.monotonic() - started < 2.5


@ALLOW_LOCAL
@override_settings(AIEMAILY_IMAGE_PROXY_TIMEOUT=1)
@pytest.mark.parametrize("path", ["/trickle-body", "/trickle-headers"])
def test_a_server_trickling_bytes_is_cut_off_at_the_total_deadline(client, site, path):
    # Each byte arrives well within any per-read timeout; only a deadline for the whole fetch
    # (headers and body) stops a server that would otherwise hold a web worker for minutes.
    base, hits = site
    started = time.monotonic()
    response = _get(client, f"{base}{path}")
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert elapsed < 2.0
    assert hits == [path]


@ALLOW_LOCAL
def test_redirects_are_followed_only_to_vetted_destinations(client, site):
    base, hits = site
    ok = _get(client, f"{base}/redirect?to={base}/pic.png")
    assert ok.status_code == 200 and ok.content == PNG
    to_metadata = _get(client, f"{base}/redirect?to=http://169.254.169.254/latest/meta-data/")
    assert to_metadata.status_code == 403
    to_file = _get(client, f"{base}/redirect?to=file:///etc/passwd")
    assert to_file.status_code == 400
    assert hits.count("/pic.png") == 1


@ALLOW_LOCAL
def test_redirect_loops_stop(client, site):
    base, hits = site
    # Five redirects in a row, one more than MAX_REDIRECTS allows.
    loop = "".join(f"{base}/redirect?to=" for _ in range(5)) + f"{base}/pic.png"
    assert _get(client, loop).status_code == 502
    assert "/pic.png" not in hits


def test_post_is_not_allowed(client):
    url = "https://cdn.example/x.png"
    signed = urlencode({"u": url, "s": sign(url, user_id=client.user.pk)})
    assert client.post("/image-proxy?" + signed).status_code == 405


@ALLOW_LOCAL
def test_a_url_signed_for_one_user_is_refused_for_another(client, site):
    from tests.harness.factories import UserFactory

    base, hits = site
    someone_elses = proxy_url(f"{base}/pic.png", user_id=UserFactory().pk)
    assert client.get(someone_elses).status_code == 403
    assert hits == []
