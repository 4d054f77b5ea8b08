"""The one guard for outbound connections to user-supplied hosts (SSRF).

Mail servers, custom AI endpoints and remote images are named by users, so a hostile user could
point Aiemaily at 127.0.0.1:6379, the cloud metadata service at 169.254.169.254, or an internal
admin panel. Every such connection goes through `vet_host`, which resolves the name once, refuses
the destination if ANY resolved address is non-public, and returns the vetted IP. Callers connect
to exactly that IP (passing the original host name only for TLS SNI and the Host header), so a DNS
answer that changes between the check and the connect (DNS rebinding) cannot redirect them.

Private destinations are allowed only when settings.AIEMAILY_ALLOWED_PRIVATE_HOSTS lists the host
name, the address, or a network containing it (development allows the loopback interface so a
local test mailbox works). Plaintext mail protocols are allowed only for such listed hosts.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# Explicit lists on top of ipaddress' own flags: the flags have changed between Python releases
# (3.11 calls 192.0.0.8 and 64:ff9b::/96 "global"), and this guard must not depend on that.
_BLOCKED_V4 = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    )
)
_BLOCKED_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20", "5f00::/16",
        "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)
# IPv6 forms that carry an IPv4 address inside: judged by the IPv4 address they lead to.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class BlockedDestination(Exception):  # noqa: N818 - the name says what happened, callers catch it by name
    """The destination is not allowed: a non-public address not listed in the allow list."""


class UnresolvableHost(BlockedDestination):
    """The name did not resolve (yet): nothing to connect to, so nothing to vet either."""


@dataclass(frozen=True)
class VettedAddress:
    """Where to connect: `ip` and `port`; `host` is only for TLS SNI, certificates and Host headers."""

    host: str
    port: int
    ip: str
    family: int
    private_allowed: bool  # True when the allow list, not publicness, let this through


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


def normalise_host(host: str) -> str:
    """Lower-case, without a trailing dot or IPv6 brackets, IDNA-encoded; refuses junk."""
    value = (host or "").strip().lower()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    value = value.rstrip(".")
    if not value or any(ch.isspace() or ch in "/\\@?#" for ch in value):
        raise BlockedDestination(f"{host!r} is not a host name or address")
    if _literal(value) is not None:
        return value
    try:
        return value.encode("idna").decode("ascii")
    except UnicodeError:
        raise BlockedDestination(f"{host!r} is not a valid host name") from None


def _literal(value: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses (IPv4-in-IPv6 judged by the IPv4 part)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public_address(embedded)
        if any(ip in net for net in _BLOCKED_V6) or ip.is_site_local:
            return False
    elif any(ip in net for net in _BLOCKED_V4):
        return False
    flags = (ip.is_private, ip.is_loopback, ip.is_link_local, ip.is_multicast, ip.is_reserved, ip.is_unspecified)
    return ip.is_global and not any(flags)


@dataclass(frozen=True)
class _AllowList:
    names: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def allows_name(self, host: str) -> bool:
        return host in self.names

    def allows_address(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)


def _allow_list(entries: Iterable[str] | None = None) -> _AllowList:
    if entries is None:
        entries = getattr(settings, "AIEMAILY_ALLOWED_PRIVATE_HOSTS", ())
    names, networks = set(), []
    for entry in entries:
        value = entry.strip().lower().strip("[]").rstrip(".")
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            if value:
                names.add(value)
    return _AllowList(frozenset(names), tuple(networks))


def _resolve(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    try:
        raw = resolver(host, port)
    except (OSError, UnicodeError) as exc:
        raise UnresolvableHost(f"cannot resolve {host}: {exc}") from None
    addresses = [ip for ip in (_literal(value) for value in raw) if ip is not None]
    if not addresses:
        raise UnresolvableHost(f"{host} has no addresses")
    return addresses


def vet_host(host: str, port: int, *, resolver: Resolver | None = None) -> VettedAddress:
    """Resolve `host` and return the address to connect to, or raise BlockedDestination.

    Every resolved address must be public or allowed: one private answer among public ones is how
    rebinding attacks hide, so it blocks the whole host instead of being skipped.
    """
    if not isinstance(port, int) or not 0 < port < 65536:
        raise BlockedDestination(f"port {port!r} is not a valid TCP port")
    name = normalise_host(host)
    allow = _allow_list()
    addresses = _resolve(name, port, resolver or _system_resolver)
    private_allowed = False
    for ip in addresses:
        if is_public_address(ip):
            continue
        if allow.allows_name(name) or allow.allows_address(ip):
            private_allowed = True
            continue
        raise BlockedDestination(
            f"{name} resolves to {ip}, a private, loopback, link-local or reserved address; "
            "list it in AIEMAILY_ALLOWED_PRIVATE_HOSTS to allow it"
        )
    chosen = addresses[0]
    family = socket.AF_INET6 if chosen.version == 6 else socket.AF_INET
    return VettedAddress(host=name, port=port, ip=str(chosen), family=family, private_allowed=private_allowed)


def is_plaintext_allowed(host: str, *, resolver: Resolver | None = None) -> bool:
    """Plaintext IMAP/SMTP only to hosts the operator listed: credentials never cross a network in clear.

    True when the host name is listed, or every address it resolves to is covered by the list.
    """
    try:
        name = normalise_host(host)
    except BlockedDestination:
        return False
    allow = _allow_list()
    if allow.allows_name(name):
        return True
    try:
        addresses = _resolve(name, 0, resolver or _system_resolver)
    except BlockedDestination:
        return False
    return all(allow.allows_address(ip) for ip in addresses)


def vet_base_url(url: str, *, resolver: Resolver | None = None) -> VettedAddress:
    """A user's API base URL (a custom AI endpoint): https to a public host, or plain http only to a
    host the operator allow-listed (a self-hosted model on this machine or network). Checked when
    the URL is stored and again before every connection."""
    parts = urlsplit(url or "")
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password \
            or parts.query or parts.fragment:
        raise BlockedDestination("the address must be a plain http(s) URL without credentials, query or fragment")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise BlockedDestination("the address has an invalid port") from None
    vetted = vet_host(parts.hostname, port, resolver=resolver)
    if scheme == "http" and not vetted.private_allowed:
        raise BlockedDestination("plain http is allowed only for hosts listed in AIEMAILY_ALLOWED_PRIVATE_HOSTS")
    return vetted


def create_connection(vetted: VettedAddress, timeout: float) -> socket.socket:
    """A TCP connection to the vetted IP (never a fresh DNS lookup)."""
    return socket.create_connection((vetted.ip, vetted.port), timeout=timeout)


class PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to the vetted IP (never a fresh DNS lookup); the Host header still names the original host."""

    def __init__(self, vetted: VettedAddress, timeout: float):
        super().__init__(vetted.host, vetted.port, timeout=timeout)
        self._vetted = vetted

    def connect(self):
        self.sock = create_connection(self._vetted, self.timeout)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to the vetted IP, TLS 1.2+, with SNI and certificate checks for the original host name.

    `cafile`: extra CA certificates to trust instead of the system's (a company proxy; tests)."""

    def __init__(self, vetted: VettedAddress, timeout: float, *, cafile: str | None = None):
        context = ssl.create_default_context(cafile=cafile or None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        super().__init__(vetted.host, vetted.port, timeout=timeout, context=context)
        self._vetted = vetted

    def connect(self):
        raw = create_connection(self._vetted, self.timeout)
        self.sock = raw  # visible to a caller's watchdog during the TLS handshake too
        self.sock = self._context.wrap_socket(raw, server_hostname=self._vetted.host)
