"""The public site: pages, the security page's evidence, the security report, and the header score.

The header score runs against the site as shipped: a production-settings gunicorn process behind
the shipped nginx configuration over TLS, scored with the Mozilla Observatory's rules
(tests/harness/observatory.py). The score goes into the security report.
"""

import http.client
import json
import os
import ssl
import subprocess
import sys
import time

import pytest
from django.test import Client

from aiemaily.claims import CLAIMS
from scripts import security_report
from tests.harness import observatory
from tests.harness.processes import ROOT, role_env
from tests.harness.tls_fixtures import SERVER_NAME, free_port, running_nginx

PUBLIC_PAGES = ["/", "/features", "/pricing", "/faq", "/security", "/accounts/login/", "/accounts/signup/"]
# The Observatory's 135 includes +5 for being on the browsers' HSTS preload list, which only a public
# host can be: 130 is the most a response can score here, and every public page must reach it.
LOCAL_MAXIMUM = 130


@pytest.mark.django_db
@pytest.mark.parametrize("path", PUBLIC_PAGES)
def test_every_public_page_renders_for_a_visitor(path):
    response = Client().get(path)
    assert response.status_code == 200
    assert b"Privacy &amp; security" in response.content or path.startswith("/accounts/")


@pytest.mark.django_db
def test_pricing_shows_the_plans_from_the_billing_settings(settings):
    settings.AIEMAILY_BILLING_FREE_MAILBOXES = 2
    settings.AIEMAILY_BILLING_PRO_MAILBOXES = 17
    settings.AIEMAILY_BILLING_PRO_PRICE_LABEL = "EUR 7 a month"
    html = Client().get("/pricing").content.decode()
    assert "2 mailboxes" in html and "Up to 17 mailboxes" in html and "EUR 7 a month" in html


@pytest.mark.django_db
def test_the_landing_page_offers_start_free():
    html = Client().get("/").content.decode()
    assert "Start free" in html and 'href="/accounts/signup/"' in html


@pytest.mark.django_db
def test_the_security_page_has_a_section_per_promise_with_its_evidence(monkeypatch, tmp_path):
    evidence = tmp_path / "evidence.json"
    evidence.write_text(json.dumps({
        "run_at": "2026-12-01 10:00 UTC", "commit": "abc1234",
        "claims": {"csp": {"status": "proven", "passed": 7}, "cors": {"status": "unproven", "passed": 0}},
    }))
    monkeypatch.setattr("aiemaily.claims.EVIDENCE_FILE", evidence)
    html = Client().get("/security").content.decode()
    for claim in CLAIMS:
        assert f'id="{claim.id}"' in html
    assert "Proven by 7 tests, last run 2026-12-01 10:00 UTC" in html
    assert "abc1234" in html
    csp_section = html.split('id="cors"')[1].split("</section>")[0]
    assert "Not proven by the last test run" in csp_section
    # The authorisation flow, in plain words.
    assert "taken from the verified claims" in html
    # A planned promise is never shown as proven, whatever the evidence file says.
    planned = [claim for claim in CLAIMS if claim.planned]
    for claim in planned:
        section = html.split(f'id="{claim.id}"')[1].split("</section>")[0]
        assert "Not yet in place" in section


def _results(**claims):
    return {"claims": {cid: {f"tests/test_x.py::test_{cid}": outcome} for cid, outcome in claims.items()}}


def test_the_report_fails_when_a_promise_has_no_passing_test(tmp_path):
    everything = {claim.id: "passed" for claim in CLAIMS if not claim.planned}
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_results(**everything)))
    assert security_report.main(["--results", str(results), "--check"]) == 0

    # Deleting the tests behind one promise: the report (and CI, which runs it) fails.
    del everything["tls"]
    results.write_text(json.dumps(_results(**everything)))
    assert security_report.main(["--results", str(results), "--check"]) == 1

    # A failing test behind a promise fails it too, even next to passing ones.
    everything["tls"] = "failed"
    results.write_text(json.dumps(_results(**everything)))
    assert security_report.main(["--results", str(results), "--check"]) == 1


def test_the_report_lists_tests_and_asvs_per_promise(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({**_results(csp="passed"), "extra": {"observatory_score": 130}}))
    markdown, evidence = tmp_path / "claims.md", tmp_path / "claims.json"
    security_report.main(["--results", str(results), "--write", "--markdown", str(markdown),
                          "--evidence", str(evidence)])
    text = markdown.read_text()
    assert "`tests/test_x.py::test_csp`" in text
    assert "3.4.3" in text  # ASVS 5.0: CSP
    assert "observatory_score: 130" in text
    written = json.loads(evidence.read_text())
    assert written["claims"]["csp"] == {"failed": 0, "passed": 1, "skipped": 0, "status": "proven"}
    assert written["claims"]["cors"]["status"] == "unproven"


def test_an_unknown_claim_id_is_a_collection_error(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers = claim(id): a promise\n")
    test_file = tmp_path / "test_typo.py"
    test_file.write_text("import pytest\n\n@pytest.mark.claim('envelope-encryptoin')\ndef test_x():\n    pass\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:django", "-p", "tests.harness.claims_plugin",
         "-c", str(tmp_path / "pytest.ini"), str(test_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "AIEMAILY_CLAIMS_RESULTS": str(tmp_path / "r.json")},
    )
    assert result.returncode != 0
    assert "unknown claim id 'envelope-encryptoin'" in result.stdout + result.stderr


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_the_sqlite_smoke_rerun_leaves_the_full_runs_results_alone(tmp_path, database):
    # `make test` runs a smoke subset again on SQLite after the full run; .ci/run then checks the
    # full run's results, so the re-run must not overwrite them with its partial ones.
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers = claim(id): a promise\n")
    test_file = tmp_path / "test_one.py"
    test_file.write_text("import pytest\n\n@pytest.mark.claim('csp')\ndef test_x():\n    pass\n")
    results = tmp_path / "r.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIEMAILY_CLAIMS_RESULTS": str(results)}
    env.pop("AIEMAILY_TEST_DATABASE", None)
    if database == "sqlite":
        env["AIEMAILY_TEST_DATABASE"] = "sqlite"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:django", "-p", "tests.harness.claims_plugin",
         "-c", str(tmp_path / "pytest.ini"), str(test_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if database == "sqlite":
        assert not results.exists()
    else:
        assert json.loads(results.read_text())["claims"]["csp"] == {"test_one.py::test_x": "passed"}


# --- the header score, against the shipped configuration -----------------------------------------

def test_the_scorer_penalises_what_the_observatory_penalises():
    weak = observatory.score(
        headers={"content-security-policy": "default-src 'self'; script-src 'self' 'unsafe-inline'"},
        set_cookies=["sessionid=x; Path=/"], html="<script src='https://cdn.example/x.js'></script>",
        origin="https://aiemaily.example", redirect_result="redirection-missing")
    assert weak.penalties()["content-security-policy"] == "csp-implemented-with-unsafe-inline"
    assert weak.penalties()["cookies"] == "cookies-session-without-secure-flag"
    assert weak.penalties()["subresource-integrity"] == "sri-not-implemented-and-external-scripts-not-loaded-securely"
    assert weak.value == 0


@pytest.fixture(scope="module")
def production_site(django_db_blocker, tmp_path_factory):
    static_root = tmp_path_factory.mktemp("staticfiles")
    with django_db_blocker.unblock():
        port = free_port()
        env = role_env("web", production=True, extra={
            "ALLOWED_HOSTS": SERVER_NAME, "SITE_URL": f"https://{SERVER_NAME}", "AIEMAILY_SSL_REDIRECT": "true",
            "STATIC_ROOT": str(static_root),
        })
    # As a deployment does: hashed, compressed static files collected before the server starts.
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"], env=env, cwd=ROOT,
                   check=True, capture_output=True, timeout=300)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "aiemaily.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "--forwarded-allow-ips", "127.0.0.1"],
        env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError("gunicorn exited: " + process.stderr.read().decode()[-3000:])
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
                break
            except OSError:
                time.sleep(0.2)
        with running_nginx(port) as nginx:
            yield nginx
    finally:
        process.terminate()
        process.wait(20)


def _fetch(server, path):
    context = ssl.create_default_context(cafile=str(server.cert))
    connection = http.client.HTTPSConnection("127.0.0.1", server.https_port, context=context, timeout=20)
    connection.request("GET", path, headers={"Host": SERVER_NAME})
    response = connection.getresponse()
    return response, response.read().decode(errors="replace")


@pytest.mark.claim("csp")
@pytest.mark.claim("tls")
@pytest.mark.parametrize("path", PUBLIC_PAGES)
def test_every_public_page_scores_the_maximum_by_the_observatorys_rules(production_site, path, record_report_value):
    plain = http.client.HTTPConnection("127.0.0.1", production_site.http_port, timeout=10)
    plain.request("GET", path, headers={"Host": SERVER_NAME})
    redirect = plain.getresponse()
    redirect_result = observatory.redirection(f"http://{SERVER_NAME}{path}", redirect.getheader("Location"),
                                              redirect.status)

    response, html = _fetch(production_site, path)
    assert response.status == 200, html[:500]
    headers = {name.lower(): value for name, value in response.getheaders()}
    cookies = [value for name, value in response.getheaders() if name.lower() == "set-cookie"]
    result = observatory.score(headers=headers, set_cookies=cookies, html=html, origin=f"https://{SERVER_NAME}",
                               redirect_result=redirect_result)
    assert result.penalties() == {}
    expected = LOCAL_MAXIMUM if cookies else LOCAL_MAXIMUM - 5  # the cookie bonus needs a cookie
    assert result.value == expected, result.results
    if path == "/":
        record_report_value("observatory_score", f"{result.value} of 135 (130 is the local maximum: "
                                                 "HSTS preload needs a public host)")
