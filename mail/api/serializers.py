"""Input and output shapes of the connections API (DESIGN.md's contract)."""

import ipaddress
import re

from rest_framework import serializers

from aiemaily.security import netguard
from mail.models import Connection
from secrets_vault.api.fields import SecretField
from secrets_vault.oauth import scopes

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


class ServerInput(serializers.Serializer):
    host = serializers.CharField(max_length=253)
    port = serializers.IntegerField(min_value=1, max_value=65535)
    security = serializers.ChoiceField(choices=Connection.Security.choices)
    username = serializers.CharField(max_length=254)
    password = SecretField(max_length=1024, trim_whitespace=False)

    def validate_host(self, host):
        try:
            host = netguard.normalise_host(host)
            if not _HOSTNAME.match(host):
                ipaddress.ip_address(host)
        except (netguard.BlockedDestination, ValueError):
            raise serializers.ValidationError("Enter a host name such as imap.example.com.") from None
        return host

    def validate(self, attrs):
        try:
            netguard.vet_host(attrs["host"], attrs["port"])
        except netguard.BlockedDestination:
            raise serializers.ValidationError(
                {"host": "This address is private or reserved; Aiemaily does not connect there."}) from None
        except OSError:
            raise serializers.ValidationError({"host": "This host name could not be found."}) from None
        if attrs["security"] == "none" and not netguard.is_plaintext_allowed(attrs["host"]):
            raise serializers.ValidationError(
                {"security": "Unencrypted connections are only allowed to local test servers; choose TLS or STARTTLS."})
        return attrs


class ConnectionInput(serializers.Serializer):
    provider = serializers.ChoiceField(choices=Connection.Provider.choices)
    email = serializers.EmailField(max_length=254, required=False)
    imap = ServerInput(required=False)
    smtp = ServerInput(required=False)
    capabilities = serializers.ListField(child=serializers.ChoiceField(choices=scopes.CAPABILITIES), required=False,
                                         max_length=3)

    def validate(self, attrs):
        if attrs["provider"] == "imap":
            missing = [name for name in ("email", "imap", "smtp") if name not in attrs]
            if missing:
                raise serializers.ValidationError({name: "This field is required for IMAP." for name in missing})
        elif "imap" in attrs or "smtp" in attrs:
            raise serializers.ValidationError({"provider": "Server settings are only for IMAP connections."})
        return attrs


def _server(connection, prefix):
    if connection.provider != "imap":
        return None
    return {"host": getattr(connection, f"{prefix}_host"), "port": getattr(connection, f"{prefix}_port"),
            "security": getattr(connection, f"{prefix}_security"),
            "username": getattr(connection, f"{prefix}_username")}


class ConnectionOutput(serializers.Serializer):
    id = serializers.UUIDField()
    provider = serializers.CharField()
    email = serializers.CharField()
    status = serializers.CharField()
    last_error = serializers.CharField()
    requested_scopes = serializers.ListField(child=serializers.CharField())
    granted_scopes = serializers.ListField(child=serializers.CharField())
    capabilities = serializers.SerializerMethodField()
    sync = serializers.SerializerMethodField()
    imap = serializers.SerializerMethodField()
    smtp = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_capabilities(self, obj) -> list[str]:
        if obj.provider == "imap":
            return list(scopes.CAPABILITIES)
        return sorted(scopes.capabilities_granted(obj.provider, obj.granted_scopes))

    def get_sync(self, obj) -> dict:
        state = obj.sync_state or {}
        return {"state": state.get("state", "idle"), "done": state.get("done", 0), "total": state.get("total", 0),
                "last_error": state.get("last_error", "")}

    def get_imap(self, obj) -> dict | None:
        return _server(obj, "imap")

    def get_smtp(self, obj) -> dict | None:
        return _server(obj, "smtp")
