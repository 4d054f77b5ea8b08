"""The vault's OAuth code reaches the mailbox a grant serves only through the port the mail app
registers (secrets_vault/oauth/holder.py): these keep the two sides in step."""

from mail.grant_holder import ConnectionGrants
from mail.models import Connection
from secrets_vault.oauth import holder
from secrets_vault.oauth.holder import Status


def test_the_mail_app_registers_its_grant_holder_when_it_loads():
    assert isinstance(holder.get(), ConnectionGrants)


def test_every_status_the_vault_writes_is_a_connection_status():
    vault_side = {value for name, value in vars(Status).items() if name.isupper()}
    assert vault_side == {"pending", "active", "needs_reauth", "error", "disconnected"}
    assert vault_side <= set(Connection.Status.values)


def test_the_holder_offers_every_method_the_port_names():
    port = {name for name in vars(holder.GrantHolder) if not name.startswith("_")}
    assert port == {"lock", "save", "finished_attempt", "attempt_spent", "activated"}
    assert all(callable(getattr(ConnectionGrants, name, None)) for name in port)
