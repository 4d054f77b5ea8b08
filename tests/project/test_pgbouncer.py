"""Owner binding holds per transaction behind PgBouncer in transaction pooling mode: no owner bound by
one client's transaction survives into another client's transaction on the same server connection.

With one server connection for all clients, a binding that outlived its transaction would be seen by
the next client; the control case (a session-level setting, which the app never uses) shows that it
would be, so the test can fail.
"""

import json
import random
import subprocess
import sys
import threading

import psycopg
import pytest

from aiemaily.ownership.binding import owner_scope
from mail.models import Connection
from tests.harness.factories import UserFactory
from tests.harness.pgbouncer_fixtures import bouncer_url, running_pgbouncer
from tests.harness.processes import ROOT, role_env

pytestmark = [pytest.mark.claim("owner-scoping"),
              pytest.mark.django_db(transaction=True, databases=["default", "maintenance"])]

BIND = "SELECT set_config('app.owner_id', %s, true)"
BOUND = "SELECT NULLIF(current_setting('app.owner_id', true), '')"
VISIBLE = "SELECT email FROM mail_connection ORDER BY email"


@pytest.fixture
def two_owners():
    owners = {}
    for name in ("alice", "bob"):
        user = UserFactory()
        with owner_scope(user):
            Connection.objects.create(owner=user, provider="imap", email=f"{name}@example.test", status="active")
        owners[name] = user
    return owners


def test_a_binding_never_outlives_its_transaction_on_a_shared_server_connection(two_owners):
    alice = str(two_owners["alice"].pk)
    with running_pgbouncer(pool_size=1) as port:
        url = bouncer_url(port)
        # No prepared statements: they belong to a server connection, which PgBouncer hands around.
        with psycopg.connect(url, prepare_threshold=None) as first, \
                psycopg.connect(url, prepare_threshold=None) as second:
            first.execute(BIND, [alice])
            first_pid = first.execute("SELECT pg_backend_pid()").fetchone()[0]
            assert [r[0] for r in first.execute(VISIBLE)] == ["alice@example.test"]
            first.commit()
            # The second client gets the very same server connection...
            assert second.execute("SELECT pg_backend_pid()").fetchone()[0] == first_pid
            # ...and no owner: RLS shows it nothing.
            assert second.execute(BOUND).fetchone()[0] is None
            assert second.execute(VISIBLE).fetchall() == []
            second.commit()

            # Control: a session-level setting (never used by the app) does leak through the pool.
            first.execute("SELECT set_config('app.owner_id', %s, false)", [alice])
            first.commit()
            assert second.execute(BOUND).fetchone()[0] == alice
            second.commit()


def test_concurrent_clients_each_see_only_their_own_owner(two_owners):
    owners = {str(u.pk): f"{name}@example.test" for name, u in two_owners.items()}
    failures: list[str] = []
    with running_pgbouncer(pool_size=2) as port:
        url = bouncer_url(port)

        def client(seed: int):
            rng = random.Random(seed)
            try:
                with psycopg.connect(url, prepare_threshold=None) as conn:
                    for _ in range(50):
                        owner = rng.choice([*owners, None])
                        if owner is not None:
                            conn.execute(BIND, [owner])
                        seen = [r[0] for r in conn.execute(VISIBLE)]
                        expected = [owners[owner]] if owner else []
                        if seen != expected:
                            failures.append(f"bound {owner}, saw {seen}")
                        conn.commit()
            except Exception as error:  # noqa: BLE001 - reported as a failure of the test, not lost in a thread
                failures.append(repr(error))

        threads = [threading.Thread(target=client, args=(seed,)) for seed in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert failures == []


APP_THROUGH_BOUNCER = """
import json, django
django.setup()
from django.db import transaction
from aiemaily.ownership.binding import bound_owner_id, owner_scope
from mail.models import Connection
alice, bob = {alice!r}, {bob!r}
seen = []
for i in range(12):
    for owner in (alice, bob):
        with owner_scope(owner):
            seen.append(sorted(Connection.objects.for_owner(owner).values_list("email", flat=True)))
    with transaction.atomic():
        seen.append(bound_owner_id())
print(json.dumps(seen))
"""


def test_the_app_runs_through_pgbouncer_with_per_transaction_binding(two_owners):
    alice, bob = str(two_owners["alice"].pk), str(two_owners["bob"].pk)
    with running_pgbouncer(pool_size=1) as port:
        env = role_env("web", extra={"DATABASE_URL": bouncer_url(port), "DATABASE_PGBOUNCER": "true"})
        code = APP_THROUGH_BOUNCER.format(alice=alice, bob=bob)
        # Two app processes at once through one server connection.
        procs = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-2000:]
        seen = json.loads(out.strip().splitlines()[-1])
        assert seen == [["alice@example.test"], ["bob@example.test"], None] * 12
