"""A delegate's account can be deleted: PostgreSQL removes other owners' grants to it (issue 12)."""

from django.db import migrations

from aiemaily.ownership.migration_ops import DatabaseOnDelete


class Migration(migrations.Migration):

    dependencies = [
        ('mail', '0004_delegation'),
    ]

    operations = [
        DatabaseOnDelete('Delegation', 'delegate', 'CASCADE'),
    ]
