"""An outbox row's to, cc, subject and In-Reply-To (and the recipients a server refused, which
last_error named in plaintext before) become sealed columns, like a message's metadata
(mail/metadata.py). The plaintext columns keep their names in the database, as legacy_* fields,
until `manage.py metadata_encrypt` has sealed and emptied them (as migration 0009 did for messages)."""

from django.db import migrations, models


def _renames():
    ops = []
    for old, field in (
        ("to_addrs", models.JSONField(default=list, blank=True, db_column="to_addrs", editable=False)),
        ("cc_addrs", models.JSONField(default=list, blank=True, db_column="cc_addrs", editable=False)),
        ("subject", models.CharField(max_length=998, blank=True, db_column="subject", editable=False)),
        ("in_reply_to", models.CharField(max_length=998, blank=True, db_column="in_reply_to", editable=False)),
    ):
        ops += [migrations.RenameField("outboxmessage", old, f"legacy_{old}"),
                migrations.AlterField("outboxmessage", f"legacy_{old}", field)]
    return ops


class Migration(migrations.Migration):

    dependencies = [
        ('mail', '0011_message_terms_array'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=_renames(), database_operations=[]),
        migrations.AddField(model_name='outboxmessage', name='to_ct', field=models.BinaryField(editable=False, null=True)),
        migrations.AddField(model_name='outboxmessage', name='cc_ct', field=models.BinaryField(editable=False, null=True)),
        migrations.AddField(model_name='outboxmessage', name='subject_ct',
                            field=models.BinaryField(editable=False, null=True)),
        migrations.AddField(model_name='outboxmessage', name='in_reply_to_ct',
                            field=models.BinaryField(editable=False, null=True)),
        migrations.AddField(model_name='outboxmessage', name='refused_ct',
                            field=models.BinaryField(editable=False, null=True)),
    ]
