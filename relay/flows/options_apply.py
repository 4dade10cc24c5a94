"""What an options data record says, applied to the exporter's options state (pure).

SPEC "Options": options records are applied, not forwarded as flow lines.

- Sampling: samplingInterval (34) with samplingAlgorithm (35); flowSamplerId (48) with
  samplerMode (49) and samplerRandomInterval (50); selectorId (302) with
  samplingPacketInterval (305) and samplingPacketSpace (306), whose interval is
  (305 + 306) / 305: one packet in that many is sampled (goflow2#440 got these wrong), and
  selectorAlgorithm (304, PSAMP: 1 systematic count-based, 3 random n-out-of-N) as the mode.
  A record that names a sampler (48 or 302, as a field or, in Cisco's v9 sampler table, as the
  scope field) sets that sampler's; one that names none (a v9 system scope with 34/35, say)
  sets the domain-wide sampling.
- systemInitTimeMilliseconds (160): the base of IPFIX flowStart/EndSysUpTime.
- interfaceName (82), else interfaceDescription (83), for the ifIndex in ingressInterface
  (10) or egressInterface (14), or a v9 interface scope field (type 2).
"""

from __future__ import annotations

from collections.abc import Sequence

from relay.flows.elements import Value
from relay.flows.options_state import OptionsKey, OptionsState, Sampling
from relay.flows.records import Record, RecordPlan

__all__ = ["apply_options", "options_values"]

_V9_INTERFACE_SCOPE = 2
_SAMPLER_ELEMENTS = (48, 302)  # flowSamplerId, selectorId


def options_values(plan: RecordPlan, record: Record) -> tuple[dict[int, Value], int | None]:
    """The record's IANA values by element (the first of a repeat), a v9 scope field's value
    included under its scope type when that type is an element that names something (2
    interface, 48 flowSamplerId, 302 selectorId); and the v9 interface scope's index."""
    template = plan.template
    values: dict[int, Value] = {}
    interface: int | None = None
    for i, spec in enumerate(template.fields):
        value = record[i]
        if plan.version == 9 and i < template.scope_fields:
            # v9 scope values are decoded as octets (hex); these scope types are numbers.
            number = _hex_int(value) if isinstance(value, str) else None
            if spec.element == _V9_INTERFACE_SCOPE:
                interface = number if interface is None else interface
            elif spec.element in _SAMPLER_ELEMENTS and number is not None:
                values.setdefault(spec.element, number)
            continue
        if not spec.enterprise:
            values.setdefault(spec.element, value)
    return values, interface


def apply_options(
    state: OptionsState,
    key: OptionsKey,
    plan: RecordPlan,
    records: Sequence[Record],
    now: float,
) -> bool:
    """Apply every record; True if one of them gave systemInitTimeMilliseconds."""
    gave_init = False
    for record in records:
        values, scope_interface = options_values(plan, record)
        sampler = _int(values.get(48))
        if sampler is None:
            sampler = _int(values.get(302))
        sampling = _sampling(values)
        if sampling is not None:
            state.set_sampling(key, sampler, sampling, now)
        init = _int(values.get(160))
        if init is not None:
            gave_init = state.set_system_init_ms(key, init, now) or gave_init
        name = values.get(82)
        if not isinstance(name, str) or not name:
            name = values.get(83)
        if isinstance(name, str) and name:
            index = _int(values.get(10))
            if index is None:
                index = _int(values.get(14))
            if index is None:
                index = scope_interface
            if index is not None:
                state.set_interface_name(key, index, name, now)
    return gave_init


def _sampling(values: dict[int, Value]) -> Sampling | None:
    interval = _int(values.get(34))
    if interval is None:
        interval = _int(values.get(50))
    if interval is None:
        every, space = _int(values.get(305)), _int(values.get(306))
        if every:
            interval = (every + (space or 0)) // every
    if not interval:
        return None
    mode = _int(values.get(35))
    if mode is None:
        mode = _int(values.get(49))
    if mode is None:
        mode = _int(values.get(304))
    return Sampling(interval=interval, mode=mode or 0)


def _int(value: Value | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _hex_int(text: str) -> int | None:
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None
