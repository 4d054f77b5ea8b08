"""The RLS-bypass maintenance role stays out of the processes that parse untrusted input.

Real processes, each with only its own configuration (tests/harness/processes.py): web (as in production)
and worker-sync have no `maintenance` database alias, refuse the audited unscoped path, and cannot
log in as the maintenance role even when they try by hand — the test cluster, like production,
wants that role's own password, which only worker-maintenance and the admin process are given.
Cross-owner jobs run on the `maintenance` queue, served by a real worker-maintenance here.
"""

import json
import os
from datetime import timedelta

import pytest
from django.utils import timezone

from aiemaily.celery import app as celery_app
from aiemaily.idempotency.models import IdempotencyKey
from aiemaily.ownership.binding import owner_scope
from tests.harness.factories import UserFactory
from tests.harness.processes import Worker, run_as, wait_for

pytestmark = [pytest.mark.django_db(transaction=True, databases=["default", "maintenance"]),
              pytest.mark.claim("owner-scoping")]

needs_enforcing_cluster = pytest.mark.skipif(
    not os.environ.get("AIEMAILY_TEST_MAINTENANCE_PASSWORD"),
    reason="the external TEST_DATABASE_URL cluster is not known to require the maintenance role's password")

ATTEMPTS = """
import json, os, django
django.setup()
import psycopg
from django.conf import settings
from django.db import connections
results = {"alias": "maintenance" in settings.DATABASES,
           "env": "DATABASE_MAINTENANCE_URL" in os.environ}
def attempt(name, fn):
    try:
        results[name] = "OK:" + repr(fn())
    except Exception as exc:
        results[name] = type(exc).__name__ + ":" + str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
from mail.models import Connection
attempt("unscoped", lambda: Connection.objects.unscoped(reason="isolation test").count())
app = connections["default"].settings_dict
def login_as_maintenance(password):
    with psycopg.connect(host=app["HOST"], port=app["PORT"], dbname=app["NAME"],
                         user=settings.AIEMAILY_DB_MAINTENANCE_ROLE, password=password, connect_timeout=5) as c:
        return c.execute("SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user").fetchone()[0]
attempt("login_no_password", lambda: login_as_maintenance(None))
attempt("login_app_password", lambda: login_as_maintenance(app.get("PASSWORD") or None))
if results["alias"]:
    attempt("maintenance_db", lambda: connections["maintenance"].cursor().execute("SELECT 1"))
    attempt("unscoped", lambda: Connection.objects.unscoped(reason="isolation test").count())
print("RESULT" + json.dumps(results))
"""


def _run(role, production=False):
    result = run_as(role, ATTEMPTS, production=production)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def _mailbox(owner):
    from mail.models import Connection

    with owner_scope(owner):
        Connection.objects.create(owner=owner, provider="imap", email="box@example.test",
                                  imap_host="imap.example.test", status="active")


@needs_enforcing_cluster
@pytest.mark.parametrize(("role", "production"), [("web", True), ("sync", False), ("ai", False), ("idle", False)])
def test_processes_that_parse_user_input_cannot_reach_the_maintenance_role(role, production):
    _mailbox(UserFactory())
    results = _run(role, production=production)
    assert results["alias"] is False and results["env"] is False
    assert results["unscoped"].startswith("MaintenanceNotHere")
    # Not by hand either: the cluster refuses the role without its own password.
    assert results["login_no_password"].startswith("OperationalError")
    assert results["login_app_password"].startswith("OperationalError")


@needs_enforcing_cluster
def test_worker_maintenance_holds_the_role_and_reads_across_owners():
    # The control: the same probe in the maintenance process does get through, so the refusals above
    # are the configuration's doing, not a broken probe.
    _mailbox(UserFactory())
    _mailbox(UserFactory())
    results = _run("maintenance")
    assert results["alias"] is True and results["env"] is True
    assert results["maintenance_db"].startswith("OK")
    assert results["unscoped"] == "OK:2"
    assert results["login_no_password"].startswith("OperationalError")


def test_cross_owner_jobs_are_routed_to_the_maintenance_queue():
    router = celery_app.amqp.router
    for name in ("mail.tasks.sync_due", "aiemaily.idempotency.tasks.reap_expired"):
        assert router.route({}, name)["queue"].name == "maintenance", name
    for name in ("mail.tasks.connection_sync", "accounts.tasks.account_purge"):
        assert router.route({}, name)["queue"].name != "maintenance", name


def test_the_public_site_has_no_admin_and_the_admin_process_has_only_the_admin(settings):
    from django.urls import resolve
    from django.urls.exceptions import Resolver404

    import aiemaily.admin_urls as admin_urls

    names = {str(p.pattern) for p in admin_urls.urlpatterns}
    assert names == {"healthz", "admin/"}
    # The production web process's URL map: built with AIEMAILY_PROCESS=web in a child process.
    code = ("import django; django.setup(); from django.urls import resolve, Resolver404\n"
            "try:\n    resolve('/admin/login/'); print('RESULT admin')\n"
            "except Resolver404:\n    print('RESULT none')\n")
    result = run_as("web", code, production=True)
    assert "RESULT none" in result.stdout, result.stderr[-2000:]
    admin = run_as("admin", code)
    assert "RESULT admin" in admin.stdout, admin.stderr[-2000:]
    with pytest.raises(Resolver404):
        resolve("/no-such-admin/")


def test_a_real_worker_maintenance_reaps_every_owners_expired_keys(tmp_path):
    first, second = UserFactory(), UserFactory()
    old = timezone.now() - timedelta(days=2)
    for owner in (first, second):
        with owner_scope(owner):
            IdempotencyKey.objects.create(owner=owner, key="k-" + str(owner.pk)[:8], fingerprint="f" * 64,
                                          response_status=201, response_body=b"{}", expires_at=old)
    worker = Worker("maintenance", "maintenance", tmp_path / "maintenance.log")
    try:
        worker.wait_ready()
        celery_app.send_task("aiemaily.idempotency.tasks.reap_expired")
        wait_for(lambda: not IdempotencyKey.objects.unscoped(reason="test: reaper check").exists(),
                 timeout=30, what="the maintenance worker to reap both owners' keys")
    finally:
        worker.stop()
    assert "reaped 2 expired idempotency keys" in worker.output()
