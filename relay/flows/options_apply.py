"""What an options data record says, applied to the exporter's options state (pure).

SPEC "Options": options records are applied, not forwarded as flow lines.

- Sampling: samplingInterval (34) with samplingAlgorithm (35); flowSamplerId (48) with
  samplerMode (49) and samplerRandomInterval (50); selectorId (302) with
  samplingPacketInterval (305) and samplingPacketSpace (306), whose interval is
  (305 + 306) / 305: one packet in that many is sampled (goflow2#440 got these wrong).
  A record that names a sampler (48 or 302, or in a v9 options template a scope field:
  Cisco's sampler table scopes by the sampler ID) sets that sampler's; one that names none
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


def options_values(plan: RecordPlan, record: Record) -> tuple[dict[int, Value], int | None]:
    """The record's non-scope IANA values by element (the first of a repeat), and the index
    a v9 interface scope names or, for any other v9 scope, the scope's number (a sampler ID
    for Cisco's sampler table); None without a usable scope."""
    template = plan.template
    values: dict[int, Value] = {}
    scope_value: int | None = None
    for i, spec in enumerate(template.fields):
        value = record[i]
        if plan.version == 9 and i < template.scope_fields:
            if scope_value is None and isinstance(value, str) and spec.element != 1:
                scope_value = _hex_int(value)
            continue
        if not spec.enterprise:
            values.setdefault(spec.element, value)
    return values, scope_value


def apply_options(
    state: OptionsState,
    key: OptionsKey,
    plan: RecordPlan,
    records: Sequence[Record],
    now: float,
) -> bool:
    """Apply every record; True if one of them gave systemInitTimeMilliseconds."""
    gave_init = False
    interface_scope = plan.version == 9 and any(
        f.element == _V9_INTERFACE_SCOPE for f in plan.template.fields[: plan.template.scope_fields]
    )
    for record in records:
        values, scope_value = options_values(plan, record)
        sampler = _int(values.get(48))
        if sampler is None:
            sampler = _int(values.get(302))
        if sampler is None and not interface_scope:
            sampler = scope_value
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
            if index is None and interface_scope:
                index = scope_value
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
    return Sampling(interval=interval, mode=mode or 0)


def _int(value: Value | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _hex_int(text: str) -> int | None:
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None
