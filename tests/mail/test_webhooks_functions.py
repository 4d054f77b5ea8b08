"""The Gmail and Graph ledger statements run as PL/pgSQL functions on PostgreSQL (migration
webhooks/0002): they hold no rights of their own, and they work behind PgBouncer in transaction
pooling, where every client's transaction may land on a server connection another client used (the
reason they are functions, not prepared statements).
"""

import json
import re
import subprocess
import sys
import uuid

import psycopg
import pytest
from django.conf import settings
from django.db import ProgrammingError, connection
from psycopg import sql

from aiemaily.webhooks.grants import STATEMENT_FUNCTIONS, grant_execute
from aiemaily.webhooks.models import WebhookDelivery, WebhookSubscription
from aiemaily.webhooks.services import address_digest, push_record, secret_digest, subscription_store
from tests.harness.factories import UserFactory
from tests.harness.pgbouncer_fixtures import bouncer_url, running_pgbouncer
from tests.harness.processes import ROOT, role_env

pytestmark = [pytest.mark.skipif("connection.vendor != 'postgresql'"),
              pytest.mark.django_db(transaction=True, databases=["default", "maintenance"])]

FUNCTIONS = ("webhooks_push_record", "webhooks_accept_if_current")
OWNER_ROLE = "aiemaily_owner"  # the role tests/conftest.py runs the migrations as: it owns the functions


def test_the_functions_run_with_the_callers_rights_and_settings_only():
    with connection.cursor() as cursor:
        cursor.execute("SELECT proname, prosecdef, proconfig FROM pg_proc WHERE proname = ANY(%s) ORDER BY proname",
                       [list(FUNCTIONS)])
        found = cursor.fetchall()
    # SECURITY INVOKER (prosecdef false): the app role calling them can do nothing it could not do
    # with the statements themselves; no per-function settings (proconfig) to change what they see.
    assert found == [("webhooks_accept_if_current", False, None), ("webhooks_push_record", False, None)]


def test_the_functions_write_every_ledger_column():
    """The INSERT column lists are written out in the migration: a column added to the ledger model
    later must be added to them too (by a new migration), or PostgreSQL rows would miss it."""
    expected = sorted(field.column for field in WebhookDelivery._meta.concrete_fields)
    with connection.cursor() as cursor:
        for signature in STATEMENT_FUNCTIONS:
            cursor.execute("SELECT pg_get_functiondef(%s::regprocedure)", [signature])
            body = cursor.fetchone()[0]
            found = re.search(r'INSERT INTO "webhooks_webhookdelivery"(?: AS d)?\s*\(([^)]*)\)', body)
            assert found, signature
            assert sorted(column.strip().strip('"') for column in found.group(1).split(",")) == expected


def _as_owner():
    target = connection.settings_dict
    return psycopg.connect(host=target["HOST"], port=target["PORT"], dbname=target["NAME"], user=OWNER_ROLE,
                           password=target["PASSWORD"] or None, autocommit=True)


def test_the_app_role_may_run_them_on_a_server_where_public_may_not():
    user = UserFactory()
    address = f"{uuid.uuid4().hex[:8]}@gmail.test"
    subscription_store(provider="gmail", external_id=address_digest(address), account_id=user.pk,
                       connection_id=uuid.uuid4())
    push = {"provider": "gmail", "external_id": address_digest(address), "kind": "push", "position": 7}
    app_role = sql.Identifier(settings.AIEMAILY_DB_APP_ROLE)
    with _as_owner() as owner:
        try:
            for signature in STATEMENT_FUNCTIONS:  # a hardened server: nobody but the owner may run them
                owner.execute(sql.SQL("REVOKE EXECUTE ON FUNCTION {} FROM PUBLIC, {}").format(sql.SQL(signature),
                                                                                             app_role))
            with pytest.raises(ProgrammingError, match="permission denied"):
                push_record(delivery_id="p-denied", **push)
            with owner.cursor() as cursor:  # what post_migrate runs, as the role that migrated
                assert grant_execute(cursor, settings.AIEMAILY_DB_APP_ROLE) == list(STATEMENT_FUNCTIONS)
            assert push_record(delivery_id="p-granted", **push).advanced
        finally:
            for signature in STATEMENT_FUNCTIONS:
                owner.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO PUBLIC").format(sql.SQL(signature)))
    assert list(WebhookDelivery.objects.unscoped(reason="test").values_list("delivery_id", flat=True)) == [
        "p-granted"]


RECORDER = """
import json, django
django.setup()
from aiemaily.webhooks.selectors import subscription_by_external_id
from aiemaily.webhooks.services import address_digest, delivery_accept_if_current, push_record
seen = []
for i in range(12):
    push = dict(provider="gmail", external_id=address_digest({address!r}), delivery_id="{tag}-push-%d" % i,
                kind="push", position=1000 + i)
    first, replay = push_record(**push), push_record(**push)
    channel = subscription_by_external_id(provider="graph", external_id={graph_id!r})
    item = dict(provider="graph", channel=channel, delivery_id="{tag}-item-%d" % i, kind="created")
    accepted, again = delivery_accept_if_current(**item), delivery_accept_if_current(**item)
    seen.append([first.recorded.accepted, first.advanced, replay.recorded.accepted, replay.advanced,
                 accepted is not None and accepted.accepted, again is None])
print(json.dumps(seen))
"""


def test_pushes_and_graph_items_are_recorded_right_through_pgbouncer():
    """Two web processes through one shared server connection, each recording 12 Gmail pushes and 12
    Graph items (and a replay of each): the functions' plans, made on that server connection by one
    client's transaction, serve the other's, and every outcome is what it is without PgBouncer."""
    user = UserFactory()
    clients = []
    for tag in ("a", "b"):
        address, graph_id = f"{tag}-{uuid.uuid4().hex[:8]}@gmail.test", str(uuid.uuid4())
        subscription_store(provider="gmail", external_id=address_digest(address), account_id=user.pk,
                           connection_id=uuid.uuid4())
        subscription_store(provider="graph", external_id=graph_id, account_id=user.pk, connection_id=uuid.uuid4(),
                           secret_hash=secret_digest(f"state-{tag}"))
        clients.append((tag, address, graph_id))
    with running_pgbouncer(pool_size=1) as port:
        env = role_env("web", extra={"DATABASE_URL": bouncer_url(port), "DATABASE_PGBOUNCER": "true"})
        procs = [subprocess.Popen([sys.executable, "-c", RECORDER.format(tag=tag, address=address, graph_id=graph_id)],
                                  env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for tag, address, graph_id in clients]
        outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-2000:]
        # first copy accepted and moving the cursor; its replay neither; a Graph item accepted once
        assert json.loads(out.strip().splitlines()[-1]) == [[True, True, False, False, True, True]] * 12
    ledger = WebhookDelivery.objects.unscoped(reason="test")
    assert ledger.filter(provider="gmail", verdict="accepted").count() == 24
    assert ledger.filter(provider="graph", verdict="accepted").count() == 24
    registry = WebhookSubscription.objects.unscoped(reason="test").filter(provider="gmail")
    assert sorted(registry.values_list("cursor", flat=True)) == [1011, 1011]
