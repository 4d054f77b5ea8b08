"""The Gmail and Graph ledger statements run as PL/pgSQL functions on PostgreSQL (migration
webhooks/0002): they hold no rights of their own, and they work behind PgBouncer in transaction
pooling, where every client's transaction may land on a server connection another client used (the
reason they are functions, not prepared statements).
"""

import json
import subprocess
import sys
import uuid

import pytest
from django.db import connection

from aiemaily.webhooks.models import WebhookDelivery, WebhookSubscription
from aiemaily.webhooks.services import address_digest, secret_digest, subscription_store
from tests.harness.factories import UserFactory
from tests.harness.pgbouncer_fixtures import bouncer_url, running_pgbouncer
from tests.harness.processes import ROOT, role_env

pytestmark = [pytest.mark.skipif("connection.vendor != 'postgresql'"),
              pytest.mark.django_db(transaction=True, databases=["default", "maintenance"])]

FUNCTIONS = ("webhooks_push_record", "webhooks_accept_if_current")


def test_the_functions_run_with_the_callers_rights_and_settings_only():
    with connection.cursor() as cursor:
        cursor.execute("SELECT proname, prosecdef, proconfig FROM pg_proc WHERE proname = ANY(%s) ORDER BY proname",
                       [list(FUNCTIONS)])
        found = cursor.fetchall()
    # SECURITY INVOKER (prosecdef false): the app role calling them can do nothing it could not do
    # with the statements themselves; no per-function settings (proconfig) to change what they see.
    assert found == [("webhooks_accept_if_current", False, None), ("webhooks_push_record", False, None)]


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
