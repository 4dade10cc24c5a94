"""NetFlow v9 / IPFIX messages → data sets ready to render (sans-IO; ``now`` is an argument,
wall-clock seconds, as the template cache wants).

This ties the parts together, in the order RFC 3954 and RFC 7011 imply:

1. The message's templates are applied first, in wire order (a template serves the data of
   its own datagram); withdrawals are ignored and counted (RFC 7011 §8.4, over UDP); a v9
   template with no fields is refused and counted.
2. Data sets held for a template just learned (or sent again) are released, in arrival
   order, each with its own datagram's header, before this message's data sets.
3. Each data set: its template found → a :class:`TemplateBatch` (flow data) or, for an
   options template, its records applied to the options state (sampling, system init time,
   interface names), never forwarded; not found → held (:mod:`relay.flows.holding`).
4. IPFIX records timed by flowStart/EndSysUpTime need the exporter's
   systemInitTimeMilliseconds; while it is unknown their sets wait in a second holding,
   released when an options record brings it.

Everything here is bounded by the cache, the holdings and the options state; the plan of
each template (keys, kinds, layout) is cached, bounded too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from relay.flows import holding as holding_mod
from relay.flows.holding import Holding
from relay.flows.model import DataSet, Message, PacketHeader, Problem
from relay.flows.options_apply import apply_options
from relay.flows.options_state import OptionsKey, OptionsState
from relay.flows.records import RecordPlan, decode_records, plan_for, record_count
from relay.flows.template import Template, TemplateScope
from relay.flows.templates import Refusal, TemplateCache, TemplateEvent

__all__ = [
    "Decoded",
    "Expired",
    "TemplateBatch",
    "TemplateDecoder",
    "TemplateDecoderStatistics",
    "needs_system_init",
]

_PLAN_LIMIT = 4096
# IPFIX flowEndSysUpTime / flowStartSysUpTime: ms since the exporter's system init (IE 160).
_SYSUPTIME = frozenset({21, 22})
_SYSTEM_INIT = 160
NO_TEMPLATE = "no_template"
NO_SYSTEM_INIT = "no_system_init"
HOLD_REFUSED = "hold_refused"


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateBatch:
    """One data set ready to render, with everything its line needs from outside it."""

    header: PacketHeader  # of the datagram the set arrived in (a held one keeps its own)
    plan: RecordPlan
    data: bytes  # the set body, padding included: the renderer cuts the records
    options_key: OptionsKey  # whose options govern its records
    part: int
    offset: int
    restored: bool  # decoded with a template restored from the state file
    held_for: float = 0.0  # seconds it waited (0: decoded on arrival)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decoded:
    batches: tuple[TemplateBatch, ...]  # released held sets first, then this message's
    problems: tuple[Problem, ...]  # the message's own, and sets this step refused
    # The IPFIX sequence step: data records (flow and options) this message carried, or
    # None when one of its sets was held, so that its record count is unknown.
    data_records: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Expired:
    templates: int
    sets: dict[str, int]  # held sets dropped at expiry, by what they waited for
    bytes: dict[str, int]
    options_domains: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateDecoderStatistics:
    templates: int
    template_events: dict[str, int]  # TemplateEvent value -> count, every kind present
    templates_refused: dict[str, int]  # Refusal value -> count
    records_from_restored: int
    held_sets: int  # now, both holdings
    held_bytes: int
    sets_held: int  # ever
    sets_released: int
    sets_expired: dict[str, int]
    sets_refused: int  # not held: a holding bound
    options_records: int
    options_domains: int
    per_exporter: dict[str, int] = field(default_factory=dict)  # templates known


def needs_system_init(plan: RecordPlan) -> bool:
    """Whether an IPFIX data template's times are relative to systemInitTimeMilliseconds
    that the record itself does not carry."""
    if plan.version != 10 or plan.template.options:
        return False
    elements = {f.element for f in plan.template.fields if not f.enterprise}
    return bool(elements & _SYSUPTIME) and _SYSTEM_INIT not in elements


class TemplateDecoder:
    """Templates, options and held data of every exporter; see the module docstring."""

    def __init__(
        self,
        *,
        scope_port: bool = False,
        cache: TemplateCache | None = None,
        options: OptionsState | None = None,
        hold_age: float = holding_mod.DEFAULT_HOLD_AGE,
        hold_bytes_per_exporter: int = holding_mod.DEFAULT_MAX_BYTES_PER_EXPORTER,
        hold_bytes: int = holding_mod.DEFAULT_MAX_BYTES,
    ) -> None:
        self._scope_port = scope_port
        # Not ``cache or ...``: an empty cache has a length of 0, and is falsy.
        self.cache = TemplateCache() if cache is None else cache
        self.options = OptionsState() if options is None else options
        self._held: Holding[tuple[TemplateScope, int], tuple[PacketHeader, int, int]] = Holding(
            max_age=hold_age, max_bytes_per_exporter=hold_bytes_per_exporter, max_bytes=hold_bytes
        )
        # IPFIX data waiting for its exporter's systemInitTimeMilliseconds, with its plan.
        self._init_held: Holding[OptionsKey, tuple[PacketHeader, int, int, RecordPlan, bool]] = (
            Holding(
                max_age=hold_age,
                max_bytes_per_exporter=hold_bytes_per_exporter,
                max_bytes=hold_bytes,
            )
        )
        self._plans: dict[tuple[int, Template], RecordPlan] = {}
        self._options_records = 0

    def decode(self, message: Message, exporter: str, port: int, now: float) -> Decoded:
        header = message.header
        version = header.version
        scope = TemplateScope(
            exporter=exporter,
            domain=header.domain,
            version=version,
            port=port if self._scope_port else None,
        )
        key = OptionsKey(exporter=exporter, version=version, domain=header.domain)
        out: list[TemplateBatch] = []
        problems = list(message.problems)
        for problem in message.problems:
            if problem.reason == "empty_template":
                self.cache.refuse(scope, 0, Refusal.NO_FIELDS)
        for withdrawal in message.withdrawals:
            self.cache.withdraw(scope, withdrawal.template_id)
        for template in message.templates:
            event = self.cache.learn(scope, template, now)
            if event is not TemplateEvent.REFUSED:
                self._release(scope, template.template_id, key, now=now, out=out, problems=problems)
        records: int | None = 0
        for data_set in message.data_sets:
            counted = self._data_set(
                scope=scope, key=key, header=header, data_set=data_set, now=now, out=out,
                problems=problems,
            )  # fmt: skip
            records = None if counted is None or records is None else records + counted
        return Decoded(batches=tuple(out), problems=tuple(problems), data_records=records)

    def tick(self, now: float) -> Expired:
        """Forget stale templates and options; drop held sets past their age (counted)."""
        templates = self.cache.tick(now)
        sets: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        for reason, holding in ((NO_TEMPLATE, self._held), (NO_SYSTEM_INIT, self._init_held)):
            for held in holding.tick(now):
                sets[reason] += 1
                sizes[reason] += len(held.data)
        domains = self.options.tick(now)
        return Expired(templates=templates, sets=dict(sets), bytes=dict(sizes),
                       options_domains=domains)  # fmt: skip

    def statistics(self) -> TemplateDecoderStatistics:
        c = self.cache.statistics()
        h, i = self._held.statistics(), self._init_held.statistics()
        return TemplateDecoderStatistics(
            templates=c.templates,
            template_events=dict(c.events),
            templates_refused=dict(c.refused),
            records_from_restored=c.records_from_restored,
            held_sets=h.sets + i.sets,
            held_bytes=h.bytes + i.bytes,
            sets_held=h.held + i.held,
            sets_released=h.released + i.released,
            sets_expired={NO_TEMPLATE: h.expired, NO_SYSTEM_INIT: i.expired},
            sets_refused=h.refused + i.refused,
            options_records=self._options_records,
            options_domains=self.options.statistics().domains,
            per_exporter={address: n for address, (n, _) in c.per_exporter.items()},
        )

    # --- one data set ---------------------------------------------------------------------

    def _data_set(
        self,
        *,
        scope: TemplateScope,
        key: OptionsKey,
        header: PacketHeader,
        data_set: DataSet,
        now: float,
        out: list[TemplateBatch],
        problems: list[Problem],
    ) -> int | None:
        """Decode, apply or hold one set; its record count, None if held."""
        known = self.cache.lookup(scope, data_set.template_id, len(data_set.data))
        if known is None:
            where = (header, data_set.part, data_set.offset)
            held = self._held.hold(
                (scope, data_set.template_id), scope.exporter, where, data_set.data, now
            )
            if not held:
                problems.append(_refused(data_set, "its template"))
            return None
        plan = self._plan(known.template, scope.version)
        return self._known(
            plan, key, header, data_set.data, part=data_set.part, offset=data_set.offset,
            restored=known.restored, now=now, waited=0.0, out=out, problems=problems,
        )  # fmt: skip

    def _known(
        self,
        plan: RecordPlan,
        key: OptionsKey,
        header: PacketHeader,
        data: bytes,
        *,
        part: int,
        offset: int,
        restored: bool,
        now: float,
        waited: float,
        out: list[TemplateBatch],
        problems: list[Problem],
    ) -> int | None:
        if plan.template.options:
            records, tail = decode_records(plan, data, part=part, offset=offset)
            problems += tail
            self._options_records += len(records)
            if apply_options(self.options, key, plan, records, now):
                self._release_init(key, now, out, problems)
            return len(records)
        if needs_system_init(plan) and self.options.system_init_ms(key) is None:
            where = (header, part, offset, plan, restored)
            if not self._init_held.hold(key, key.exporter, where, data, now):
                problems.append(
                    Problem(part=part, reason=HOLD_REFUSED, offset=offset,
                            detail="data set refused while it waits for the exporter's "
                            "systemInitTimeMilliseconds: the holding is full")
                )  # fmt: skip
            return None
        count = record_count(plan, data)
        if restored:
            self.cache.count_restored_records(count)
        out.append(
            TemplateBatch(header=header, plan=plan, data=data, options_key=key, part=part,
                          offset=offset, restored=restored, held_for=waited)
        )  # fmt: skip
        return count

    # --- releases -------------------------------------------------------------------------

    def _release(
        self,
        scope: TemplateScope,
        template_id: int,
        key: OptionsKey,
        *,
        now: float,
        out: list[TemplateBatch],
        problems: list[Problem],
    ) -> None:
        if not self._held.waiting((scope, template_id)):
            return
        for held in self._held.release((scope, template_id)):
            header, part, offset = held.header
            known = self.cache.lookup(scope, template_id, len(held.data))
            if known is None:  # does not fit the template that came: what it waited for
                problems.append(
                    Problem(part=part, reason="short_record", offset=offset,
                            detail=f"held data set does not fit template {template_id}")
                )  # fmt: skip
                continue
            plan = self._plan(known.template, scope.version)
            self._known(
                plan, key, header, held.data, part=part, offset=offset, restored=known.restored,
                now=now, waited=now - held.arrived, out=out, problems=problems,
            )  # fmt: skip

    def _release_init(
        self, key: OptionsKey, now: float, out: list[TemplateBatch], problems: list[Problem]
    ) -> None:
        if self.options.system_init_ms(key) is None or not self._init_held.waiting(key):
            return
        for held in self._init_held.release(key):
            header, part, offset, plan, restored = held.header
            self._known(
                plan, key, header, held.data, part=part, offset=offset, restored=restored,
                now=now, waited=now - held.arrived, out=out, problems=problems,
            )  # fmt: skip

    def _plan(self, template: Template, version: int) -> RecordPlan:
        found = self._plans.get((version, template))
        if found is None:
            if len(self._plans) >= _PLAN_LIMIT:
                self._plans.clear()
            found = self._plans[(version, template)] = plan_for(template, version)
        return found


def _refused(data_set: DataSet, waits_for: str) -> Problem:
    return Problem(
        part=data_set.part,
        reason=HOLD_REFUSED,
        offset=data_set.offset,
        detail=f"data set of template {data_set.template_id} refused while it waits for "
        f"{waits_for}: the holding's bound is reached (templates.hold_bytes)",
    )
