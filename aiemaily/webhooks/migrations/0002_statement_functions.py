"""The two statements the Gmail and Graph routes run on every delivery, as PL/pgSQL functions.

Why functions. Sent as text, each statement was parsed, analysed and planned by PostgreSQL on every
delivery: for Gmail's data-modifying CTE that was half of its cost (0.42 ms against 0.21 ms
prepared, in a tight loop; benchmarks/bench_webhooks.py). Protocol-level prepared statements would
save it, but they break behind PgBouncer 1.18 in transaction pooling (docs/deployment.md): the next
transaction may run on a server connection that never saw the PREPARE. A PL/pgSQL function's
statements are prepared inside the server, per server connection, the first time that connection
runs the function, so every connection PgBouncer hands out plans them once and then reuses the plan.

What they do is exactly what the text statements did (aiemaily/webhooks/services.py says why each
rule holds). SECURITY INVOKER: a function runs with the caller's privileges, grants and row-level
security, nothing more; the tables are the system ledger and registry (no RLS, see models.py).
SQLite (the embedded default) has no functions: services.py runs the same rules in steps there.

A later change to either statement is a new migration with CREATE OR REPLACE FUNCTION: this text is
the history of what ran, not a module to import.
"""

from django.db import migrations

PUSH_RECORD = """
CREATE OR REPLACE FUNCTION webhooks_push_record(
    p_provider text, p_external_id text, p_id uuid, p_delivery_id text, p_kind text, p_verdict text,
    p_now timestamptz, p_position bigint)
RETURNS TABLE (channel_id uuid, channel_account_id uuid, channel_connection_id uuid,
               channel_expires_at timestamptz, inserted boolean, settled boolean, advanced boolean)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER AS $$
BEGIN
    RETURN QUERY
    WITH sub AS (
        SELECT s."id", s."account_id", s."connection_id", s."expires_at", s."cursor"
        FROM "webhooks_webhooksubscription" s
        WHERE s."provider" = p_provider AND s."external_id" = p_external_id
    ), ins AS (
        INSERT INTO "webhooks_webhookdelivery" AS d
            ("id", "provider", "delivery_id", "kind", "verdict", "received_at", "processed_at", "account_id")
        SELECT p_id, p_provider, p_delivery_id, p_kind, p_verdict, p_now,
               CASE WHEN sub."cursor" >= p_position THEN p_now END, sub."account_id"
        FROM sub WHERE sub."expires_at" IS NULL OR sub."expires_at" >= p_now
        ON CONFLICT DO NOTHING
        RETURNING d."processed_at"
    ), upd AS (
        UPDATE "webhooks_webhooksubscription" u SET "cursor" = p_position
        WHERE u."provider" = p_provider AND u."external_id" = p_external_id
          AND (u."cursor" IS NULL OR u."cursor" < p_position)
          AND EXISTS (SELECT 1 FROM ins WHERE ins."processed_at" IS NULL)
        RETURNING 1
    )
    SELECT sub."id", sub."account_id", sub."connection_id", sub."expires_at",
           EXISTS (SELECT 1 FROM ins), EXISTS (SELECT 1 FROM ins WHERE ins."processed_at" IS NOT NULL),
           EXISTS (SELECT 1 FROM upd)
    FROM sub;
END
$$
"""

ACCEPT_IF_CURRENT = """
CREATE OR REPLACE FUNCTION webhooks_accept_if_current(
    p_id uuid, p_provider text, p_delivery_id text, p_kind text, p_verdict text, p_received_at timestamptz,
    p_account_id uuid, p_channel_id uuid, p_connection_id uuid, p_secret_hash text, p_expires_at timestamptz)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY INVOKER AS $$
BEGIN
    INSERT INTO "webhooks_webhookdelivery"
        ("id", "provider", "delivery_id", "kind", "verdict", "received_at", "processed_at", "account_id")
    SELECT p_id, p_provider, p_delivery_id, p_kind, p_verdict, p_received_at, NULL, p_account_id
    WHERE EXISTS (
        SELECT 1 FROM "webhooks_webhooksubscription" s
        WHERE s."id" = p_channel_id AND s."account_id" = p_account_id AND s."connection_id" = p_connection_id
          AND s."secret_hash" = p_secret_hash AND s."expires_at" IS NOT DISTINCT FROM p_expires_at)
    ON CONFLICT DO NOTHING;
    RETURN FOUND;
END
$$
"""

DROP = """
DROP FUNCTION IF EXISTS webhooks_push_record(text, text, uuid, text, text, text, timestamptz, bigint);
DROP FUNCTION IF EXISTS webhooks_accept_if_current(uuid, text, text, text, text, timestamptz, uuid, uuid, uuid,
                                                   text, timestamptz);
"""


def create_functions(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PUSH_RECORD)
        schema_editor.execute(ACCEPT_IF_CURRENT)


def drop_functions(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):

    dependencies = [
        ("webhooks", "0001_ledger_and_subscriptions"),
    ]

    operations = [
        migrations.RunPython(create_functions, drop_functions, elidable=False),
    ]
