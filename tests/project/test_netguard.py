"""The SSRF guard: private, loopback, link-local, reserved and unspecified destinations are refused.

Addresses are given as literals or through an injected resolver, so no test depends on outside DNS;
`localhost` is the one real lookup (it resolves from /etc/hosts, always to loopback).
"""

import ipaddress
import json
import os
import socket
import subprocess
import sys

import pytest
from django.test import override_settings

from aiemaily.security.netguard import (
    BlockedDestination,
    VettedAddress,
    is_plaintext_allowed,
    is_public_address,
    vet_host,
)

BLOCKED_LITERALS = [
    "10.0.0.1", "10.255.255.254",                      # RFC 1918
    "172.16.0.1", "172.31.255.254",
    "192.168.0.1", "192.168.1.254",
    "127.0.0.1", "127.10.20.30",                        # loopback, the whole /8
    "169.254.169.254",                                  # cloud metadata service
    "169.254.0.1",                                      # link-local
    "0.0.0.0", "0.1.2.3",                              # unspecified / "this network"
    "100.64.0.1",                                       # carrier-grade NAT
    "192.0.0.8", "192.0.2.1", "198.18.0.1", "198.51.100.1", "203.0.113.1",  # special / documentation
    "224.0.0.1", "239.255.255.250",                     # multicast
    "240.0.0.1", "255.255.255.255",                     # reserved, broadcast
    "::1", "::",                                        # IPv6 loopback, unspecified
    "fe80::1", "fe80::1%1",                             # link-local (with a zone id)
    "fc00::1", "fd12:3456::1",                          # unique local
    "fec0::1",                                          # deprecated site-local
    "ff02::1",                                          # multicast
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    "64:ff9b::7f00:1",                                  # NAT64 of 127.0.0.1
    "2002:7f00:1::1",                                   # 6to4 of 127.0.0.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",             # Teredo
    "2001:db8::1",                                      # documentation
    "::127.0.0.1",                                      # deprecated IPv4-compatible
]
# Spellings inet_aton accepts for 127.0.0.1: the resolver turns them into loopback, and so must we.
LOOPBACK_SPELLINGS = ["2130706433", "0x7f.1", "127.1", "017700000001", "0x7f000001"]
PUBLIC_LITERALS = ["93.184.215.14", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8",
                   "2a00:1450:4001:80b::200e"]


def fake_resolver(table: dict[str, list[str]]):
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


@override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=[])
@pytest.mark.parametrize("address", BLOCKED_LITERALS)
def test_non_public_addresses_are_refused(address):
    with pytest.raises(BlockedDestination, match="AIEMAILY_ALLOWED_PRIVATE_HOSTS"):
        vet_host(address, 993)


@override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=[])
@pytest.mark.parametrize("address", BLOCKED_LITERALS)
def test_bracketed_ipv6_and_trailing_dots_do_not_bypass_the_guard(address):
    spelled = f"[{address}]" if ":" in address else f"{address}."
    with pytest.raises(BlockedDestination):
        vet_host(spelled, 443)


@override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=[])
@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
def test_odd_spellings_of_loopback_are_refused(spelling):
    with pytest.raises(BlockedDestination):
        vet_host(spelling, 80)


@override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=[])
@pytest.mark.parametrize("address", PUBLIC_LITERALS)
def test_public_addresses_pass_and_the_vetted_ip_is_returned(address):
    vetted = vet_host(address, 443)
    assert isinstance(vetted, VettedAddress)
    assert vetted.port == 443 and not vetted.private_allowed
    assert is_public_address(ipaddress.ip_address(vetted.ip))


@override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=[])
def test_localhost_by_name_is_refused():
    with pytest.raises(BlockedDestination, match="localhost resolves to"):
        vet_host("localhost", 143)
    with pytest.raises(BlockedDestination):
        vet_host("LOCALHOST.", 143)


@override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=[])
def test_a_name_with_one_private_answer_among_public_ones_is_refused():
    # The DNS-rebinding shape: a public answer to pass a check, a private one to be used later.
    resolver = fake_resolver({"mixed.example": ["93.184.215.14", "10.0.0.5"]})
    with pytest.raises(BlockedDestination, match="10.0.0.5"):
        vet_host("mixed.example", 993, resolver=resolver)


@override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=[])
def test_a_public_name_returns_the_resolved_ip_to_connect_to():
    resolver = fake_resolver({"imap.example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]})
    vetted = vet_host("IMAP.Example.COM.", 993, resolver=resolver)
    assert vetted == VettedAddress(host="imap.example.com", port=993, ip="93.184.215.14",
                                   family=socket.AF_INET, private_allowed=False)


@override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=[])
def test_the_guard_resolves_once_and_the_answer_is_what_callers_use():
    answers = iter([["93.184.215.14"], ["127.0.0.1"]])
    calls = []

    def rebinding_resolver(host, port):
        calls.append(host)
        return next(answers)

    vetted = vet_host("rebind.example", 80, resolver=rebinding_resolver)
    assert calls == ["rebind.example"] and vetted.ip == "93.184.215.14"


@override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=[])
@pytest.mark.parametrize("host", ["", "   ", "evil.example/path", "user@evil.example", "a b", "x?y"])
def test_junk_host_names_are_refused(host):
    with pytest.raises(BlockedDestination):
        vet_host(host, 443)


@override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=[])
@pytest.mark.parametrize("port", [0, -1, 65536, "993", None])
def test_invalid_ports_are_refused(port):
    with pytest.raises(BlockedDestination, match="port"):
        vet_host("93.184.215.14", port)


@override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=[])
def test_unresolvable_names_are_refused_with_a_clear_message():
    with pytest.raises(BlockedDestination, match="cannot resolve nowhere.invalid"):
        vet_host("nowhere.invalid", 443, resolver=fake_resolver({}))


@override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=["127.0.0.1", "mail.internal", "10.20.0.0/16", "::1"])
def test_the_allow_list_admits_listed_addresses_names_and_networks_only():
    assert vet_host("127.0.0.1", 143).private_allowed
    assert vet_host("::1", 143).ip == "::1"
    assert vet_host("10.20.3.4", 993).private_allowed
    internal = fake_resolver({"mail.internal": ["192.168.7.7"]})
    assert vet_host("mail.internal", 993, resolver=internal).ip == "192.168.7.7"
    for still_blocked in ("127.0.0.2", "10.21.0.1", "169.254.169.254", "::ffff:10.0.0.1", "fe80::1"):
        with pytest.raises(BlockedDestination):
            vet_host(still_blocked, 993)


@override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=["127.0.0.1"])
def test_an_allowed_address_does_not_admit_a_name_resolving_to_other_private_addresses():
    resolver = fake_resolver({"sneaky.example": ["127.0.0.1", "10.0.0.1"]})
    with pytest.raises(BlockedDestination, match="10.0.0.1"):
        vet_host("sneaky.example", 143, resolver=resolver)


@override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=["127.0.0.1", "mail.internal"])
def test_plaintext_is_allowed_only_for_listed_hosts():
    resolver = fake_resolver({"mail.internal": ["10.1.1.1"], "imap.example.com": ["93.184.215.14"],
                              "loop.example": ["127.0.0.1"]})
    assert is_plaintext_allowed("127.0.0.1")
    assert is_plaintext_allowed("mail.internal", resolver=resolver)
    assert is_plaintext_allowed("loop.example", resolver=resolver)
    assert not is_plaintext_allowed("imap.example.com", resolver=resolver)
    assert not is_plaintext_allowed("10.0.0.1")
    assert not is_plaintext_allowed("nowhere.invalid", resolver=resolver)
    assert not is_plaintext_allowed("")


@override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=[])
def test_nothing_is_plaintext_without_an_allow_list():
    assert not is_plaintext_allowed("127.0.0.1")
    assert not is_plaintext_allowed("localhost")


def test_the_test_profile_allows_no_private_hosts_by_default():
    from django.conf import settings

    assert settings.AIEMAILY_ENV == "test"
    assert settings.AIEMAILY_ALLOWED_PRIVATE_HOSTS == []


def test_only_the_development_profile_allows_this_machine(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "AIEMAILY_ALLOWED_PRIVATE_HOSTS"}
    env.update(AIEMAILY_ENV="development", AIEMAILY_VAR_DIR=str(tmp_path))
    code = "import json; from django.conf import settings; print(json.dumps(settings.AIEMAILY_ALLOWED_PRIVATE_HOSTS))"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["127.0.0.1", "::1", "localhost"]
