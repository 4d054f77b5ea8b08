"""The DEK store lives only in the `vault` database; nothing else does.

Only worker-vault has a `vault` alias configured, so in any other process a DataKey query fails
with "The connection 'vault' doesn't exist" instead of reaching a key.
"""

VAULT_MODELS = {"datakey"}


class VaultRouter:
    def _is_vault(self, model) -> bool:
        return model._meta.app_label == "secrets_vault" and model._meta.model_name in VAULT_MODELS

    def db_for_read(self, model, **hints):
        return "vault" if self._is_vault(model) else None

    def db_for_write(self, model, **hints):
        return "vault" if self._is_vault(model) else None

    def allow_relation(self, obj1, obj2, **hints):
        # Instances, not type(obj): request.user is a SimpleLazyObject whose type is not the model.
        if self._is_vault(obj1) or self._is_vault(obj2):
            return False
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if db == "vault":
            return app_label == "secrets_vault" and model_name in VAULT_MODELS
        if app_label == "secrets_vault" and model_name in VAULT_MODELS:
            return False
        return None
