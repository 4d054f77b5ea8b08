"""A delegate's draft hangs off the owner's message: PostgreSQL deletes it with the message (issue 16).

The owner's delete runs under the owner's RLS binding, which hides the delegate's rows, so Django's
in-Python cascade never sees them; the referential-integrity trigger is not filtered by RLS.
"""

from django.db import migrations

from aiemaily.ownership.migration_ops import DatabaseOnDelete


class Migration(migrations.Migration):

    dependencies = [
        ('mail', '0006_merge_ai_assistant_and_delegation_cascade'),
    ]

    operations = [
        DatabaseOnDelete('AiResult', 'message', 'CASCADE'),
    ]
