"""IMAP messages synced before thread ids were marked: their thread ids came from the senders'
headers, so they get the `hdr:` mark now (messages and the grants that name them alike, so a
grant keeps covering its thread and new replies group with old messages).

The owning role is subject to RLS too (FORCE ROW LEVEL SECURITY); as the tables' owner it lifts
FORCE for this one statement, inside the migration's transaction, and puts it back.
"""

from django.db import migrations

TABLES = ("mail_message", "mail_delegation")
MARK = (
    "UPDATE {table} SET thread_id = substr('hdr:' || thread_id, 1, 200) "
    "WHERE thread_id <> '' AND substr(thread_id, 1, 4) <> 'hdr:' "
    "AND connection_id IN (SELECT id FROM mail_connection WHERE provider = 'imap')"
)


def mark(apps, schema_editor):
    postgres = schema_editor.connection.vendor == "postgresql"
    lifted = ("mail_connection", *TABLES)  # the subquery reads connections: RLS would hide them too
    if postgres:
        for table in lifted:
            schema_editor.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
    for table in TABLES:
        schema_editor.execute(MARK.format(table=table))
    if postgres:
        for table in lifted:
            schema_editor.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


class Migration(migrations.Migration):

    dependencies = [
        ("mail", "0006_merge_ai_assistant_and_delegation_cascade"),
    ]

    operations = [
        migrations.RunPython(mark, migrations.RunPython.noop),
    ]
