"""Cost of row-level security on the owner-scoped message list through the API (RLS on vs. off, same data)."""

import psycopg
import pytest
from django.db import connection
from psycopg import sql
from rest_framework.test import APIClient

from aiemaily.ownership.binding import owner_scope
from benchmarks.conftest import summary, timed
from mail.models import Connection, Folder, Message
from tests.conftest import OWNER_ROLE, issue_tokens
from tests.harness.factories import UserFactory

USERS, ROWS_PER_USER, REQUESTS = 20, 500, 300
TABLE = "mail_message"


def _owner_connection():
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.update(user=OWNER_ROLE, autocommit=True)
    return psycopg.connect(**{k: v for k, v in params.items() if k in
                              ("dbname", "user", "password", "host", "port", "autocommit")})


def _set_rls(enabled: bool):
    verb = "ENABLE" if enabled else "DISABLE"
    force = "FORCE" if enabled else "NO FORCE"
    with _owner_connection() as owner:
        owner.execute(sql.SQL(f"ALTER TABLE {{}} {verb} ROW LEVEL SECURITY").format(sql.Identifier(TABLE)))
        owner.execute(sql.SQL(f"ALTER TABLE {{}} {force} ROW LEVEL SECURITY").format(sql.Identifier(TABLE)))


@pytest.mark.django_db(transaction=True)
def test_owner_scoped_list_with_and_without_rls(record_benchmark):
    from django.utils import timezone

    users = [UserFactory() for _ in range(USERS)]
    for user in users:
        with owner_scope(user):
            connection = Connection.objects.create(owner=user, provider="imap", email=user.email, status="active")
            folder = Folder.objects.create(owner=user, connection=connection, name="INBOX", role="inbox")
            now = timezone.now()
            Message.objects.bulk_create(
                [Message(owner=user, connection=connection, folder=folder, uid=n, uidvalidity=1,
                         subject=f"Message {n}", from_addr="a@example.test", date=now - timezone.timedelta(minutes=n),
                         snippet="Lorem ipsum", blob_key=f"owner/{user.pk}/messages/x/{n}")
                 for n in range(ROWS_PER_USER)]
            )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(client, users[7])["access"])

    def request():
        response = client.get("/api/v1/messages?limit=50")
        assert response.status_code == 200 and len(response.json()["results"]) == 50

    timed(request, 30)  # warm-up
    rls_on = summary(timed(request, REQUESTS))
    _set_rls(False)
    try:
        timed(request, 30)
        rls_off = summary(timed(request, REQUESTS))
    finally:
        _set_rls(True)
    ratio = rls_on["median_ms"] / rls_off["median_ms"]
    record_benchmark("rls", f"""
## Row-level security on an owner-scoped list

`GET /api/v1/messages?limit=50` (the owner-scoped message list) through the full Django/DRF stack
(JWT auth, owner binding, cursor pagination), {USERS} users × {ROWS_PER_USER} messages, {REQUESTS}
requests each way. Baseline: the same requests with RLS disabled on `mail_message` (the scoped
manager's `owner_id` filter still applies). Differences within a few per cent are noise.

| configuration | median ms | p95 ms |
|---|---|---|
| RLS off (baseline) | {rls_off['median_ms']:.2f} | {rls_off['p95_ms']:.2f} |
| RLS on | {rls_on['median_ms']:.2f} | {rls_on['p95_ms']:.2f} |

**RLS on / RLS off: {ratio:.3f}×**
""")
    print(f"RLS on {rls_on['median_ms']:.2f} ms, off {rls_off['median_ms']:.2f} ms, ratio {ratio:.3f}")
