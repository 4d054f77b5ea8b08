"""Key stores live in their own databases; nothing else does.

- `vault`: the DEK store. Only worker-vault has this alias, so in any other process a DataKey
  query fails with "The connection 'vault' doesn't exist" instead of reaching a key.
- `keys`: the per-user storage keys of message bodies and metadata. Only the processes that read
  or write mail (web, sync, idle, ai) have it; worker-vault does not. Keeping them out of the main
  database is what makes shredding reach a backup of the main database and the object store.
"""

VAULT_MODELS = {"datakey"}
KEYS_MODELS = {"storagekey"}


def _store(model) -> str | None:
    if model._meta.app_label != "secrets_vault":
        return None
    if model._meta.model_name in VAULT_MODELS:
        return "vault"
    if model._meta.model_name in KEYS_MODELS:
        return "keys"
    return None


class VaultRouter:
    def db_for_read(self, model, **hints):
        return _store(model)

    def db_for_write(self, model, **hints):
        return _store(model)

    def allow_relation(self, obj1, obj2, **hints):
        # Instances, not type(obj): request.user is a SimpleLazyObject whose type is not the model.
        if _store(obj1) or _store(obj2):
            return False
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        store = _store_of(app_label, model_name)
        if db in ("vault", "keys"):
            return store == db
        if store is not None:
            return False
        return None


def _store_of(app_label, model_name) -> str | None:
    if app_label != "secrets_vault" or model_name is None:
        return None
    return "vault" if model_name in VAULT_MODELS else "keys" if model_name in KEYS_MODELS else None
