"""An IMAP mailbox of a new Dovecot user, connected for an owner (the SMTP side on the test SMTP server)."""

from aiemaily.ownership.binding import owner_scope
from mail import services
from mail.models import Connection
from secrets_vault.crypto import SecretStr


def imap_mailbox(owner, dovecot, smtp_server, *, active: bool = True, **fields) -> tuple[Connection, str]:
    """(connection, IMAP user name); `active` marks it checked, `fields` sets more of its columns."""
    user, password = dovecot.add_user()
    server = {"host": "localhost", "port": dovecot.imaps_port, "security": "tls", "username": user,
              "password": SecretStr(password)}
    with owner_scope(owner):
        connection = services.connection_create_imap(owner=owner, email=user, imap=server,
                                                     smtp=dict(server, port=smtp_server.tls_port))
        if active or fields:
            Connection.objects.for_owner(owner).filter(pk=connection.pk).update(
                **({"status": "active"} if active else {}), **fields)
    return connection, user
