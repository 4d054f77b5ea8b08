"""A folder's sync plan when a large sync is cut into parts (mail/sync/parts.py); empty otherwise."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('mail', '0012_outbox_sealed_metadata'),
    ]

    operations = [
        migrations.AddField(
            model_name='folder',
            name='parts',
            field=models.JSONField(blank=True, default=dict, editable=False, help_text='a large sync cut into parts that several processes store (mail/sync/parts.py)'),
        ),
    ]
