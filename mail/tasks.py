"""Tasks of the `sync` queue. Credentials arrive only as leases sealed to this pool."""

import logging

from celery import shared_task

from aiemaily.ownership.binding import owner_scope
from mail import services
from mail.models import Connection
from mail.providers.mailservers import MailServerError, verify_imap, verify_smtp
from secrets_vault.sealing import LeaseError, lease_open

logger = logging.getLogger(__name__)


def _verify(connection: Connection, leases: dict) -> tuple[str, str]:
    checks = (("imap_password", verify_imap, "imap"), ("smtp_password", verify_smtp, "smtp"))
    for purpose, verify, prefix in checks:
        password = lease_open(leases[purpose], owner_id=connection.owner_id, connection_id=connection.id,
                              purpose=purpose)
        try:
            verify(getattr(connection, f"{prefix}_host"), getattr(connection, f"{prefix}_port"),
                   getattr(connection, f"{prefix}_security"), getattr(connection, f"{prefix}_username"), password)
        except MailServerError as exc:
            return exc.code, exc.message
        finally:
            del password
    return "", ""


@shared_task(name="mail.tasks.connection_verify")
def connection_verify(leases, owner_id, connection_id):
    """Log in to IMAP and SMTP with leased passwords; record active or a clear error.

    The network I/O happens outside any database transaction; reads and the final write each run
    in their own transaction bound to the owner.
    """
    with owner_scope(owner_id):
        connection = Connection.objects.for_owner(owner_id).filter(pk=connection_id).first()
    if connection is None:
        return {"connection_id": connection_id, "status": "gone"}
    try:
        code, message = _verify(connection, leases)
    except LeaseError:
        code, message = "lease", "The credentials could not be handed to the mail worker; try again."
        logger.warning("lease for connection %s did not open", connection_id)
    with owner_scope(owner_id):
        services.connection_record_verification(owner_id=owner_id, connection_id=connection_id,
                                                error_code=code, error=message)
    return {"connection_id": connection_id, "status": "error" if code else "active", "code": code}


@shared_task(name="mail.tasks.connection_sync", acks_late=True)
def connection_sync(leases, owner_id, connection_id):
    """Sync an IMAP connection with a leased password. Safe to run again at any point."""
    from mail.providers.mailservers import imap_client
    from mail.sync_imap import Progress, _save_progress, sync_connection

    with owner_scope(owner_id):
        connection = Connection.objects.for_owner(owner_id).filter(pk=connection_id).first()
    if connection is None or connection.status == Connection.Status.DISCONNECTED:
        return {"connection_id": connection_id, "status": "gone"}
    try:
        password = lease_open(leases["imap_password"], owner_id=owner_id, connection_id=connection_id,
                              purpose="imap_password")
        with imap_client(connection.imap_host, connection.imap_port, connection.imap_security,
                         connection.imap_username, password) as client:
            progress = sync_connection(client, owner_id, connection)
    except (MailServerError, LeaseError) as exc:
        message = exc.message if isinstance(exc, MailServerError) else "The mail worker could not use the credentials."
        _save_progress(owner_id, connection_id, Progress().as_state("error", message))
        if isinstance(exc, MailServerError) and exc.code == "auth_failed":
            with owner_scope(owner_id):
                services.connection_record_verification(owner_id=owner_id, connection_id=connection_id,
                                                        error_code=exc.code, error=exc.message)
        return {"connection_id": connection_id, "status": "error"}
    return {"connection_id": connection_id, "status": "synced", "messages": progress.done}
