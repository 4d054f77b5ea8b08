"""Subject, addresses and snippet become sealed columns (issue 17): the plaintext columns keep their
names in the database, as legacy_* fields, until `manage.py metadata_encrypt` has emptied them.
State only: no column changes here."""

from django.db import migrations, models


def _renames():
    ops = []
    for old, field in (
        ("subject", models.CharField(max_length=998, blank=True, db_column="subject", editable=False)),
        ("from_addr", models.CharField(max_length=998, blank=True, db_column="from_addr", editable=False)),
        ("to_addrs", models.JSONField(default=list, blank=True, db_column="to_addrs", editable=False)),
        ("cc_addrs", models.JSONField(default=list, blank=True, db_column="cc_addrs", editable=False)),
        ("snippet", models.CharField(max_length=300, blank=True, db_column="snippet", editable=False)),
    ):
        ops += [migrations.RenameField("message", old, f"legacy_{old}"),
                migrations.AlterField("message", f"legacy_{old}", field)]
    return ops


class Migration(migrations.Migration):

    dependencies = [
        ('mail', '0008_merge_send_sync_keys_ai'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=_renames(), database_operations=[]),
    ]
