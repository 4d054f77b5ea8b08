"""Storage keys move out of the main database into the key store (secrets_vault.StorageKey, the
`keys` database). The old table stays, renamed in Django's state only, until
`manage.py storage_keys_move` has emptied it; and a delegate no longer reads the owner's key row
here (mail/blobstore.py checks the object against the granted thread instead)."""

from django.db import migrations

from aiemaily.ownership.migration_ops import DelegateReadPolicy

CURRENT = "NULLIF(current_setting('app.owner_id', true), '')::uuid"
LIVE_GRANT = f"d.delegate_id = {CURRENT} AND d.revoked_at IS NULL"


class DropDelegateReadPolicy(DelegateReadPolicy):
    """The inverse of DelegateReadPolicy (its `using` recreates the policy when migrating back)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        super().database_backwards(app_label, schema_editor, to_state, from_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        super().database_forwards(app_label, schema_editor, to_state, from_state)

    def describe(self):
        return f"Drop delegate read policy {self.policy} on {self.model_name}"


class Migration(migrations.Migration):

    dependencies = [
        ('mail', '0006_merge_ai_assistant_and_delegation_cascade'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RenameModel('StorageKey', 'LegacyStorageKey'),
                migrations.AlterModelTable('LegacyStorageKey', 'mail_storagekey'),
            ],
            database_operations=[],
        ),
        DropDelegateReadPolicy('LegacyStorageKey', 'delegate_reads_storage_key',
                               "EXISTS (SELECT 1 FROM mail_delegation d WHERE " + LIVE_GRANT +
                               " AND d.owner_id = mail_storagekey.owner_id)"),
    ]
