"""SPEC's snake_case rule, its examples, and keys for elements without an IANA name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.flows.names import element_key, snake_case, unique_keys
from relay.flows.registry import ELEMENTS
from relay.render.keys import COMMON_KEYS


@pytest.mark.parametrize(
    ("name", "key"),
    [
        # SPEC's own examples, every one.
        ("postNATSourceIPv4Address", "post_nat_source_ipv4_address"),
        ("flowEndReason", "flow_end_reason"),
        ("flowStartSysUpTime", "flow_start_sys_up_time"),
        ("ipNextHopIPv6Address", "ip_next_hop_ipv6_address"),
        ("minimumTTL", "minimum_ttl"),
        ("dot1qVlanId", "dot1q_vlan_id"),
        ("layer2SegmentId", "layer2_segment_id"),
        ("ingressVRFID", "ingress_vrfid"),
        ("postMCastPacketDeltaCount", "post_m_cast_packet_delta_count"),
        # And what the rule makes of the registry's harder names.
        ("ipv4IHL", "ipv4_ihl"),
        ("IPSecSPI", "ip_sec_spi"),
        ("VRFname", "vr_fname"),
        ("messageMD5Checksum", "message_md5_checksum"),
        ("rfc3550JitterMilliseconds", "rfc3550_jitter_milliseconds"),
        ("srhSegmentIPv6BasicList", "srh_segment_ipv6_basic_list"),
        ("flowLabelIPv6", "flow_label_ipv6"),
        ("octetDeltaCount", "octet_delta_count"),
    ],
)
def test_snake_case_follows_specs_rule(name: str, key: str) -> None:
    assert snake_case(name) == key


def test_every_registry_name_becomes_a_unique_snake_case_key() -> None:
    keys = [snake_case(name) for name, _ in ELEMENTS.values()]
    assert len(set(keys)) == len(keys)
    assert all(k.replace("_", "").isalnum() and k == k.lower() for k in keys)


def test_only_the_elements_that_fill_header_keys_are_named_like_them() -> None:
    # 34/38/39 fill sampling_interval/engine_type/engine_id; 149 is the header's domain. The
    # line's planner must never give their names to another value.
    header_keys = {*COMMON_KEYS, "source_id", "observation_domain_id"}
    clashing = {e for e, (name, _) in ELEMENTS.items() if snake_case(name) in header_keys}
    assert clashing == {34, 38, 39, 149}


@pytest.mark.parametrize(
    ("element", "enterprise", "key"),
    [
        (8, 0, "source_ipv4_address"),
        (225, 0, "post_nat_source_ipv4_address"),
        (40005, 0, "ie40005"),  # a Cisco ASA v9 type: not IANA's
        (65, 0, "ie65"),  # assigned for v9 compatibility, no name
        (12235, 9, "e9_12235"),
        (8, 6871, "e6871_8"),  # an enterprise element never takes an IANA name
    ],
)
def test_element_keys(element: int, enterprise: int, key: str) -> None:
    assert element_key(element, enterprise) == key


def test_repeated_keys_are_numbered_from_their_second_occurrence() -> None:
    assert unique_keys(["a", "b", "a", "a", "c", "b"]) == ["a", "b", "a_2", "a_3", "c", "b_2"]


def test_a_numbered_key_never_takes_a_key_the_template_already_has() -> None:
    assert unique_keys(["a", "a_2", "a"]) == ["a", "a_2", "a_3"]


@given(st.lists(st.sampled_from(["a", "b", "a_2", "b_2", "a_3"]), max_size=12))
def test_unique_keys_are_unique_and_keep_first_occurrences(keys: list[str]) -> None:
    out = unique_keys(keys)
    assert len(out) == len(keys)
    assert len(set(out)) == len(out)
    for i, key in enumerate(keys):
        if key not in keys[:i]:
            assert out[i] == key
