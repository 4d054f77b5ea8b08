"""The search index as one row per message (an array of 64-bit term hashes) instead of one row per
(message, term): a sync batch writes 500 index rows, not 15,000-30,000 (docs/BENCHMARKS.md).

Existing index rows are carried over without any key: a new hash is the first 64 bits of the same
HMAC-SHA256 the old row kept 128 bits of (mail/search_index.py), so the old rows of each message
are cut and gathered into its array. The owning role is subject to RLS too (FORCE ROW LEVEL
SECURITY); as the tables' owner it lifts FORCE for the copy, inside the migration's transaction,
and puts it back (as migration 0007 does). `manage.py metadata_encrypt --all --reindex` rebuilds
the index from the sealed columns instead, for any row this left without one.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import mail.search_index
from aiemaily.ownership.migration_ops import EnableOwnerRLS

GIN = "CREATE INDEX messageterms_terms_gin ON mail_messageterms USING gin (terms)"
COPY = (
    "INSERT INTO mail_messageterms (message_id, owner_id, terms) "
    "SELECT t.message_id, t.owner_id, "
    "array_agg(DISTINCT ('x' || encode(substring(t.term FROM 1 FOR 8), 'hex'))::bit(64)::bigint) "
    "FROM mail_searchterm t JOIN mail_message m ON m.id = t.message_id AND m.owner_id = t.owner_id "
    "GROUP BY t.message_id, t.owner_id"
)
LIFTED = ("mail_searchterm", "mail_message", "mail_messageterms")


def gin_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(GIN)


def carry_over(apps, schema_editor):
    """Old index rows -> one array per message (rows whose message is gone are dropped)."""
    if schema_editor.connection.vendor == "postgresql":
        for table in LIFTED:
            schema_editor.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        schema_editor.execute(COPY)
        for table in LIFTED:
            schema_editor.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        return
    # SQLite (`make run`): no RLS, no arrays; the field stores its text form.
    SearchTerm, MessageTerms = apps.get_model("mail", "SearchTerm"), apps.get_model("mail", "MessageTerms")
    Message = apps.get_model("mail", "Message")
    gathered: dict = {}
    for message_id, owner_id, term in SearchTerm._base_manager.values_list("message_id", "owner_id", "term"):
        gathered.setdefault((message_id, owner_id), set()).add(int.from_bytes(bytes(term)[:8], "big", signed=True))
    there = set(Message._base_manager.values_list("id", "owner_id"))
    MessageTerms._base_manager.bulk_create(
        [MessageTerms(message_id=m, owner_id=o, terms=sorted(h)) for (m, o), h in gathered.items() if (m, o) in there],
        batch_size=500)


class Migration(migrations.Migration):

    dependencies = [
        ('mail', '0010_message_sealed_metadata_and_search_index'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='MessageTerms',
            fields=[
                ('message', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='+', serialize=False, to='mail.message')),
                ('terms', mail.search_index.TermHashesField()),
                ('owner', models.ForeignKey(db_index=False, editable=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
        ),
        EnableOwnerRLS('MessageTerms'),
        migrations.RunPython(gin_index, migrations.RunPython.noop),
        migrations.RunPython(carry_over, migrations.RunPython.noop),
        migrations.DeleteModel(
            name='SearchTerm',
        ),
    ]
