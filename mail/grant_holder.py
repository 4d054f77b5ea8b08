"""The mailbox side of a vault-held OAuth grant (secrets_vault/oauth/holder.py), run in worker-vault.

The vault's OAuth code locks, reads and updates the connection and its sign-in attempt through
these methods; it holds no reference to the mail app. Registered in MailConfig.ready().
"""

from django.utils import timezone

from mail.models import Connection, OAuthAttempt
from mail.services import connection_push_open_queue, connection_sync_dispatch


class ConnectionGrants:
    def lock(self, owner_id, connection_id) -> Connection | None:
        return Connection.objects.for_owner(owner_id).select_for_update().filter(pk=connection_id).first()

    def save(self, connection: Connection, **fields) -> None:
        fields["updated_at"] = timezone.now()
        for name, value in fields.items():
            setattr(connection, name, value)
        connection.save(update_fields=list(fields))

    def finished_attempt(self, owner_id, *, attempt_id, connection_id) -> OAuthAttempt | None:
        return OAuthAttempt.objects.for_owner(owner_id).filter(pk=attempt_id, connection_id=connection_id).first()

    def attempt_spent(self, owner_id, *, attempt_id) -> None:
        OAuthAttempt.objects.for_owner(owner_id).filter(pk=attempt_id).update(sealed_verifier=b"")

    def activated(self, owner_id, *, connection_id) -> None:
        connection = Connection.objects.for_owner(owner_id).get(pk=connection_id)
        connection_sync_dispatch(connection=connection)
        connection_push_open_queue(connection=connection)  # push, where configured: Gmail watch, Graph subscription
