"""The exporter allow-list (SPEC "Security"): default private ranges, CIDRs from the
configuration, IPv4 exporters seen through a dual-stack socket as IPv4-mapped IPv6."""

from __future__ import annotations

import ipaddress

import pytest

from relay.allow import AllowList
from relay.config import DEFAULT_ALLOW, load


def networks(*cidrs: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(c) for c in cidrs]


@pytest.fixture
def default() -> AllowList:
    # The list exactly as the daemon builds it from a configuration with no allow key.
    return AllowList(load({}, environ={}).listen.allow)


def test_default_config_uses_the_documented_ranges() -> None:
    assert {str(n) for n in load({}, environ={}).listen.allow} == set(DEFAULT_ALLOW)
    assert set(DEFAULT_ALLOW) >= {
        "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
        "100.64.0.0/10", "169.254.0.0/16", "fc00::/7",
    }  # fmt: skip


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.255.254",
        "::1",
        "10.0.0.1",
        "10.255.255.255",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "100.64.1.1",  # carrier-grade NAT
        "100.127.255.254",
        "169.254.10.20",  # link-local
        "fe80::1",
        "fe80::1%eth0",  # a link-local source as the socket reports it, with its scope
        "fd00::1",  # unique local (fc00::/7)
        "fc00::1",
        "::ffff:10.1.2.3",  # an RFC 1918 exporter through a dual-stack [::] socket
        "::ffff:127.0.0.1",
        "::ffff:100.64.0.1",
    ],
)
def test_default_allows_private_addresses(default: AllowList, address: str) -> None:
    assert default.allows(address)


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "172.15.255.255",  # just below 172.16/12
        "172.32.0.0",  # just above
        "100.63.255.255",  # just below 100.64/10
        "100.128.0.0",  # just above
        "192.169.0.1",
        "11.0.0.0",
        "2001:db8::1",
        "2606:4700::1111",
        "fe00::1",  # below fc00::/7
        "::ffff:8.8.8.8",  # a public IPv4 exporter through a dual-stack socket
        "::",
        "0.0.0.0",
    ],
)
def test_default_denies_public_addresses(default: AllowList, address: str) -> None:
    assert not default.allows(address)


@pytest.mark.parametrize("garbage", ["", "not an address", "10.0.0.256", "10.0.0.0/8", "::g"])
def test_garbage_is_denied_not_raised(default: AllowList, garbage: str) -> None:
    assert default.allows(garbage) is False


def test_custom_list_replaces_the_default() -> None:
    allow = AllowList(networks("198.51.100.0/24", "2001:db8:1::/48"))
    assert allow.allows("198.51.100.7")
    assert allow.allows("::ffff:198.51.100.7")
    assert allow.allows("2001:db8:1::99")
    assert not allow.allows("10.0.0.1")  # private, but not listed
    assert not allow.allows("2001:db8:2::1")
    assert not allow.allows("127.0.0.1")


def test_single_host_and_everything() -> None:
    one = AllowList(networks("203.0.113.9/32"))
    assert one.allows("203.0.113.9")
    assert not one.allows("203.0.113.10")
    everyone = AllowList(networks("0.0.0.0/0", "::/0"))
    for address in ("8.8.8.8", "2001:db8::1", "::ffff:8.8.8.8", "10.0.0.1"):
        assert everyone.allows(address)


def test_ipv4_only_list_still_matches_mapped_addresses() -> None:
    allow = AllowList(networks("0.0.0.0/0"))
    assert allow.allows("::ffff:192.0.2.1")
    assert not allow.allows("2001:db8::1")


def test_empty_list_denies_everything() -> None:
    allow = AllowList([])
    assert not allow.allows("127.0.0.1")
    assert not allow.allows("::1")


def test_verdicts_stay_right_when_repeated_and_past_the_cache_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("relay.allow._CACHE_LIMIT", 100)
    allow = AllowList(networks("10.0.0.0/8"))
    # Same answer the second time (served from the cache) ...
    assert [allow.allows("10.0.0.1") for _ in range(3)] == [True] * 3
    assert [allow.allows("8.8.8.8") for _ in range(3)] == [False] * 3
    # ... and after more distinct sources than the cache holds (it is bounded, not a leak).
    for n in range(1000):
        allow.allows(str(ipaddress.IPv4Address(0x0A000000 + n)))
    assert allow.allows("10.0.0.1")
    assert not allow.allows("8.8.8.8")
    assert len(allow._cache) <= 100
