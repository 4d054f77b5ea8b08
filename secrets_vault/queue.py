"""The vault's tasks, named for the processes that queue them (web, worker-sync, worker-ai).

A signature by name is the same message the task object would send, and the routing table
(`CELERY_TASK_ROUTES`) sends every `secrets_vault.tasks.*` name to the vault queue. Importing it
does not import `secrets_vault.tasks`, and with it the key store, the KMS and the OAuth client code
that only worker-vault runs: the web zone cannot reach them, even through another module (the
`web-not-key-store` import contract). tests/vault/test_vault_queue.py checks every name below
against the tasks worker-vault registers.
"""

from celery.canvas import Signature

from aiemaily.celery import app


class VaultTask:
    """One vault task, queued by name with the calls of a Celery task object (`s`, `si`, `delay`)."""

    def __init__(self, name: str):
        self.name = f"secrets_vault.tasks.{name}"

    def s(self, *args) -> Signature:
        return app.signature(self.name, args=args)

    def si(self, *args) -> Signature:
        return app.signature(self.name, args=args, immutable=True)

    def delay(self, *args):
        return self.s(*args).delay()


secret_store = VaultTask("secret_store")
leases_issue = VaultTask("leases_issue")
ai_key_lease = VaultTask("ai_key_lease")
owner_shred = VaultTask("owner_shred")
oauth_exchange = VaultTask("oauth_exchange")
oauth_access_lease = VaultTask("oauth_access_lease")
oauth_close_lease = VaultTask("oauth_close_lease")
oauth_revoke = VaultTask("oauth_revoke")
oauth_revoke_for_deletion = VaultTask("oauth_revoke_for_deletion")
