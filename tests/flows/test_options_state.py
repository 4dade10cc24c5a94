"""Options state per (address, version, domain): sampling, system init time, interface
names; bounded and expiring."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relay.flows.options_state import MAX_NAME_LENGTH, OptionsKey, OptionsState, Sampling

K = OptionsKey(exporter="192.0.2.1", version=10, domain=1)


def key(exporter: str = "192.0.2.1", version: int = 10, domain: int = 1) -> OptionsKey:
    return OptionsKey(exporter=exporter, version=version, domain=domain)


@pytest.mark.parametrize(
    ("known", "asked", "expected"),
    [
        ({5: 100}, 5, 100),  # the record's own sampler
        ({5: 100, None: 10}, 5, 100),
        ({5: 100, None: 10}, 6, 10),  # an unknown sampler: the domain-wide sampling
        ({5: 100, None: 10}, None, 10),  # a record that names no sampler
        ({5: 100}, 6, None),  # nothing that governs it
        ({5: 100}, None, None),
        ({}, None, None),
    ],
)
def test_sampling_is_found_by_sampler_id_then_for_the_domain(
    known: dict[int | None, int], asked: int | None, expected: int | None
) -> None:
    state = OptionsState()
    for sampler, interval in known.items():
        assert state.set_sampling(K, sampler, Sampling(interval=interval, mode=2), 0.0)
    found = state.sampling_for(K, asked)
    assert (found.interval if found else None) == expected


def test_v9_and_ipfix_and_two_domains_never_share_options() -> None:
    state = OptionsState()
    state.set_sampling(key(version=9), None, Sampling(interval=100), 0.0)
    state.set_system_init_ms(key(version=10), 123, 0.0)
    assert state.sampling_for(key(version=10), None) is None
    assert state.sampling_for(key(version=9, domain=2), None) is None
    assert state.system_init_ms(key(version=9)) is None
    assert state.system_init_ms(key(version=10)) == 123


def test_system_init_time_and_interface_names_are_kept_and_names_truncated() -> None:
    state = OptionsState()
    assert state.system_init_ms(K) is None
    state.set_system_init_ms(K, 1_700_000_000_000, 0.0)
    state.set_interface_name(K, 3, "Gi0/0/3", 0.0)
    state.set_interface_name(K, 4, "x" * 1000, 0.0)
    assert state.system_init_ms(K) == 1_700_000_000_000
    assert state.interface_name(K, 3) == "Gi0/0/3"
    assert state.interface_name(K, 4) == "x" * MAX_NAME_LENGTH
    assert state.interface_name(K, 5) is None
    state.set_interface_name(K, 3, "Gi0/0/3.100", 1.0)  # renamed: replaced, not added
    assert state.interface_name(K, 3) == "Gi0/0/3.100"
    assert state.statistics().interfaces == 2


@pytest.mark.parametrize(
    ("limits", "fill"),
    [
        ({"max_domains_per_exporter": 2}, lambda s, n: s.set_system_init_ms(key(domain=n), 1, 0)),
        ({"max_domains": 2}, lambda s, n: s.set_system_init_ms(key(f"10.0.0.{n}"), 1, 0)),
        ({"max_samplers": 2}, lambda s, n: s.set_sampling(K, n, Sampling(interval=2), 0)),
        ({"max_interfaces": 2}, lambda s, n: s.set_interface_name(K, n, "eth", 0)),
    ],
)
def test_options_over_a_bound_are_refused_and_counted(
    limits: dict[str, int], fill: Callable[[OptionsState, int], bool]
) -> None:
    state = OptionsState(**limits)
    assert [fill(state, n) for n in range(3)] == [True, True, False]
    assert state.statistics().refused == 1


def test_a_domain_not_updated_for_max_age_is_forgotten() -> None:
    state = OptionsState(max_age=100.0)
    state.set_sampling(key(domain=1), 5, Sampling(interval=10), 0.0)
    state.set_interface_name(key(domain=2), 1, "eth0", 0.0)
    state.set_system_init_ms(key(domain=1), 7, 50.0)  # an update keeps the domain
    assert state.tick(99.0) == 0
    assert state.tick(100.0) == 1
    assert state.interface_name(key(domain=2), 1) is None
    assert state.sampling_for(key(domain=1), 5) == Sampling(interval=10)
    assert state.tick(150.0) == 1
    stats = state.statistics()
    assert (stats.domains, stats.samplers, stats.interfaces, stats.expired) == (0, 0, 0, 2)
    # The per-exporter count went with them: the exporter may fill its domains again.
    assert all(state.set_system_init_ms(key(domain=n), 1, 200.0) for n in range(256))


def test_a_flood_of_100000_domains_stays_capped() -> None:
    state = OptionsState()
    for n in range(100_000):
        exporter = f"10.0.{(n >> 8) & 255}.{n & 255}"
        state.set_sampling(key(exporter, domain=n), None, Sampling(interval=n + 1), float(n))
    stats = state.statistics()
    assert stats.domains == 16_384  # DEFAULT_MAX_DOMAINS
    assert stats.refused == 100_000 - 16_384
    one = OptionsState()
    for n in range(100_000):
        one.set_system_init_ms(key(domain=n), n, 0.0)
    assert len(one) == 256  # DEFAULT_MAX_DOMAINS_PER_EXPORTER
