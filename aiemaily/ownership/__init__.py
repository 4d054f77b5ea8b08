"""Owner scoping, layer one (Python) and layer two (PostgreSQL row-level security) bindings.

See docs/security-model.md. Public names: OwnedModel, owner_scope, bind_owner, owner_task.
"""
