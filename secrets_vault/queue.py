"""The vault's tasks, by name, for the processes that queue them (web, worker-sync, worker-ai).

Importing these does not import `secrets_vault.tasks`, and with it the key store, the KMS and the
OAuth client code that only worker-vault runs: no other zone reaches them, even through another
module (the `web-not-key-store` and `sync-and-ai-not-vault` import contracts). The routing table
sends every `secrets_vault.tasks.*` name to the vault queue; tests/project/test_tasks_by_name.py checks
each name below against the tasks worker-vault registers.
"""

from aiemaily.celery import TaskByName

secret_store = TaskByName("secrets_vault.tasks.secret_store")
leases_issue = TaskByName("secrets_vault.tasks.leases_issue")
ai_key_lease = TaskByName("secrets_vault.tasks.ai_key_lease")
owner_shred = TaskByName("secrets_vault.tasks.owner_shred")
oauth_exchange = TaskByName("secrets_vault.tasks.oauth_exchange")
oauth_access_lease = TaskByName("secrets_vault.tasks.oauth_access_lease")
oauth_close_lease = TaskByName("secrets_vault.tasks.oauth_close_lease")
oauth_revoke = TaskByName("secrets_vault.tasks.oauth_revoke")
oauth_revoke_for_deletion = TaskByName("secrets_vault.tasks.oauth_revoke_for_deletion")
