"""Migration operation that puts an owned table under PostgreSQL row-level security.

Used in every migration that creates an owned model; tests/project/test_rls_catalog.py fails if a table
with an owner_id column lacks it.
"""

from django.db import migrations

POLICY = "owner_isolation"
PREDICATE = "owner_id = NULLIF(current_setting('app.owner_id', true), '')::uuid"


class EnableOwnerRLS(migrations.operations.base.Operation):
    reduces_to_sql = True
    reversible = True

    def __init__(self, model_name: str):
        self.model_name = model_name

    def state_forwards(self, app_label, state):
        pass

    def _table(self, app_label, state):
        return state.apps.get_model(app_label, self.model_name)._meta.db_table

    def _applies(self, app_label, schema_editor, state) -> bool:
        model = state.apps.get_model(app_label, self.model_name)
        return schema_editor.connection.vendor == "postgresql" and self.allow_migrate_model(
            schema_editor.connection.alias, model
        )

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if not self._applies(app_label, schema_editor, to_state):
            return
        table = schema_editor.quote_name(self._table(app_label, to_state))
        schema_editor.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        schema_editor.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        schema_editor.execute(
            f"CREATE POLICY {POLICY} ON {table} USING ({PREDICATE}) WITH CHECK ({PREDICATE})"
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if not self._applies(app_label, schema_editor, from_state):
            return
        table = schema_editor.quote_name(self._table(app_label, from_state))
        schema_editor.execute(f"DROP POLICY IF EXISTS {POLICY} ON {table}")
        schema_editor.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        schema_editor.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")

    def describe(self):
        return f"Enable owner row-level security on {self.model_name}"

    def deconstruct(self):
        return (self.__class__.__qualname__, [self.model_name], {})


class DelegateReadPolicy(migrations.operations.base.Operation):
    """An extra, SELECT-only RLS policy letting a delegate read rows a live grant covers.

    Permissive policies are OR'ed, so this widens reads only; writes stay under owner_isolation's
    WITH CHECK. `grant_condition` is SQL over the delegation row `d` and the protected table's row.
    tests/project/test_rls_catalog.py requires every policy besides owner_isolation to be SELECT-only and
    named delegate_*.
    """

    reduces_to_sql = True
    reversible = True

    def __init__(self, model_name: str, policy: str, using: str):
        self.model_name, self.policy, self.using = model_name, policy, using

    def state_forwards(self, app_label, state):
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        if schema_editor.connection.vendor != "postgresql" or not self.allow_migrate_model(
                schema_editor.connection.alias, model):
            return
        table = schema_editor.quote_name(model._meta.db_table)
        schema_editor.execute(f"CREATE POLICY {self.policy} ON {table} FOR SELECT USING ({self.using})")

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        model = from_state.apps.get_model(app_label, self.model_name)
        if schema_editor.connection.vendor != "postgresql" or not self.allow_migrate_model(
                schema_editor.connection.alias, model):
            return
        table = schema_editor.quote_name(model._meta.db_table)
        schema_editor.execute(f"DROP POLICY IF EXISTS {self.policy} ON {table}")

    def describe(self):
        return f"Delegate read policy {self.policy} on {self.model_name}"

    def deconstruct(self):
        return (self.__class__.__qualname__, [self.model_name, self.policy, self.using], {})


class DatabaseOnDelete(migrations.operations.base.Operation):
    """Make PostgreSQL itself cascade (or null) a foreign key when the referenced row is deleted.

    For a reference from one owner's rows to another user (a delegation's `delegate`): deleting that
    user runs under *their* RLS binding, which hides the other owners' rows, so Django's in-Python
    cascade never sees them and the DELETE fails at COMMIT. The referential-integrity trigger that
    runs ON DELETE CASCADE is not filtered by row-level security. Django keeps its own on_delete too
    (SQLite, and rows the binding can see). tests/accounts/test_account_deletion_references.py fails for any
    foreign key to a user from an RLS table that lacks this.
    """

    reduces_to_sql = True
    reversible = True
    ACTIONS = ("CASCADE", "SET NULL")

    def __init__(self, model_name: str, field_name: str, action: str = "CASCADE"):
        if action not in self.ACTIONS:
            raise ValueError(f"action must be one of {self.ACTIONS}")
        self.model_name, self.field_name, self.action = model_name, field_name, action

    def state_forwards(self, app_label, state):
        pass

    def _recreate(self, app_label, schema_editor, state, action: str | None):
        model = state.apps.get_model(app_label, self.model_name)
        if schema_editor.connection.vendor != "postgresql" or not self.allow_migrate_model(
                schema_editor.connection.alias, model):
            return
        field = model._meta.get_field(self.field_name)
        target = field.remote_field.model._meta
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(
                """SELECT c.conname FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
                   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
                   WHERE c.contype = 'f' AND t.relname = %s AND a.attname = %s""",
                [model._meta.db_table, field.column])
            names = [row[0] for row in cursor.fetchall()]
        q = schema_editor.quote_name
        on_delete = f" ON DELETE {action}" if action else ""
        for name in names:
            schema_editor.execute(
                f"ALTER TABLE {q(model._meta.db_table)} DROP CONSTRAINT {q(name)}, "
                f"ADD CONSTRAINT {q(name)} FOREIGN KEY ({q(field.column)}) "
                f"REFERENCES {q(target.db_table)} ({q(target.pk.column)}){on_delete} DEFERRABLE INITIALLY DEFERRED")

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        self._recreate(app_label, schema_editor, to_state, self.action)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        self._recreate(app_label, schema_editor, from_state, None)

    def describe(self):
        return f"ON DELETE {self.action} in the database for {self.model_name}.{self.field_name}"

    def deconstruct(self):
        return (self.__class__.__qualname__, [self.model_name, self.field_name, self.action], {})
