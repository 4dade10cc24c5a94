"""Syslog keys for information elements: SPEC's snake_case rule, and keys for the rest.

SPEC "The line": ``IPv4`` and ``IPv6`` are words of their own; otherwise a word ends where a
lowercase letter or a digit is followed by a capital, and a run of capitals ends before its
last capital when a lowercase letter follows; words are lowercased and joined with ``_``.
The rule is written down exactly, rather than borrowed from a generic camel-case splitter,
because the keys are a contract with the platform's tables: ``ingressVRFID`` must stay
``ingress_vrfid`` whatever a library's next release thinks.

An element with no IANA name is ``ie<ID>`` (v9 vendor types such as Cisco's 40005) or
``e<PEN>_<ID>`` (IPFIX enterprise elements); an element repeated within a template keeps
every occurrence as ``name``, ``name_2``, ``name_3`` ... (SPEC "Field decoding").
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from relay.flows.registry import ELEMENTS

# IANA's element numbers are 15 bits; above that a v9 number is a vendor's (RFC 3954 §8).
IANA_MAX = 0x7FFF

_OWN_WORDS = re.compile(r"(IPv4|IPv6)")
_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """``postNATSourceIPv4Address`` -> ``post_nat_source_ipv4_address`` (SPEC's rule)."""
    words: list[str] = []
    for piece in _OWN_WORDS.split(name):
        if piece in ("IPv4", "IPv6"):
            words.append(piece)
        elif piece:
            words.extend(w for w in _BOUNDARY.split(piece) if w)
    return "_".join(w.lower() for w in words)


def element_key(element: int, enterprise: int = 0) -> str:
    """The key of one element: its IANA name in snake_case, else ``ie<ID>`` / ``e<PEN>_<ID>``."""
    if enterprise:
        return f"e{enterprise}_{element}"
    entry = ELEMENTS.get(element) if element <= IANA_MAX else None
    return snake_case(entry[0]) if entry else f"ie{element}"


def unique_keys(keys: Iterable[str]) -> list[str]:
    """Keys in order, a repeated one numbered from its second occurrence: ``a, a_2, a_3``.

    A numbered key that another element already owns (``ie5_2`` is unlikely, but a template
    is the exporter's to write) takes the next free number, so no value is overwritten.
    """
    wanted = list(keys)
    taken = set(wanted)
    seen: dict[str, int] = {}
    out = []
    for key in wanted:
        count = seen.get(key, 0) + 1
        seen[key] = count
        if count == 1:
            out.append(key)
            continue
        candidate = f"{key}_{count}"
        while candidate in taken:
            count += 1
            candidate = f"{key}_{count}"
        seen[key] = count
        taken.add(candidate)
        out.append(candidate)
    return out
