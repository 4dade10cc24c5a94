"""The template cache: scope, events, bounds, expiry, restored templates (sans-IO)."""

from __future__ import annotations

import tracemalloc
from typing import ClassVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from relay.flows.template import VARIABLE_LENGTH, FieldSpec, Template, TemplateScope
from relay.flows.template_store import decode_templates, encode_templates
from relay.flows.templates import (
    Refusal,
    StoredTemplate,
    TemplateCache,
    TemplateEvent,
    fits,
    template_size,
)

DAY = 24 * 3600.0


def scope(
    exporter: str = "192.0.2.1", domain: int = 1, version: int = 9, port: int | None = None
) -> TemplateScope:
    return TemplateScope(exporter=exporter, domain=domain, version=version, port=port)


def tmpl(template_id: int = 256, *lengths: int, options: bool = False) -> Template:
    lengths = lengths or (4, 4, 2)
    return Template(
        template_id=template_id,
        fields=tuple(FieldSpec(element=n + 1, length=size) for n, size in enumerate(lengths)),
        options=options,
        scope_fields=1 if options else 0,
    )


def test_a_template_is_learned_then_refreshed_then_replaced() -> None:
    cache = TemplateCache()
    s = scope()
    assert cache.learn(s, tmpl(256, 4, 4), 0.0) is TemplateEvent.LEARNED
    assert cache.learn(s, tmpl(256, 4, 4), 1.0) is TemplateEvent.REFRESHED
    assert cache.learn(s, tmpl(256, 4, 2), 2.0) is TemplateEvent.REPLACED
    known = cache.lookup(s, 256, 6)
    assert known is not None
    assert known.template == tmpl(256, 4, 2)
    assert not known.restored
    events = cache.statistics().events
    assert (events["learned"], events["refreshed"], events["replaced"]) == (1, 1, 1)


@pytest.mark.parametrize(
    "other",
    [
        scope(exporter="192.0.2.2"),  # another exporter
        scope(domain=2),  # another line card (Source ID / Observation Domain ID)
        scope(version=10),  # IPFIX never uses a v9 template
        scope(port=2055),  # address-port scope: another exporting process
    ],
)
def test_two_scopes_never_share_a_template(other: TemplateScope) -> None:
    cache = TemplateCache()
    cache.learn(scope(), tmpl(256, 4), 0.0)
    assert cache.lookup(other, 256, 4) is None
    assert cache.learn(other, tmpl(256, 8), 0.0) is TemplateEvent.LEARNED
    known = cache.lookup(scope(), 256, 4)
    assert known is not None
    assert known.template == tmpl(256, 4)
    assert len(cache) == 2


def test_a_withdrawal_over_udp_is_ignored_and_counted() -> None:
    cache = TemplateCache()
    cache.learn(scope(), tmpl(256), 0.0)
    assert cache.withdraw(scope(), 256) is TemplateEvent.WITHDRAWAL_IGNORED
    assert cache.withdraw(scope(), None) is TemplateEvent.WITHDRAWAL_IGNORED
    assert cache.lookup(scope(), 256, 10) is not None
    assert cache.statistics().events["withdrawal_ignored"] == 2


def test_a_template_with_no_fields_is_refused_counted_and_leaves_the_old_one() -> None:
    cache = TemplateCache()
    cache.learn(scope(), tmpl(256), 0.0)
    assert cache.refuse(scope(), 256, Refusal.NO_FIELDS) is TemplateEvent.REFUSED
    stats = cache.statistics()
    assert stats.refused["no_fields"] == 1
    assert stats.events["refused"] == 1
    assert cache.lookup(scope(), 256, 10) is not None


# (bound, value, templates to learn as (exporter, id, field lengths), expected refusal)
BOUNDS = [
    ("max_templates_per_exporter", 2, [("a", 256, (4,)), ("a", 257, (4,)), ("a", 258, (4,))],
     Refusal.EXPORTER_TEMPLATES),
    ("max_bytes_per_exporter", 20, [("a", 256, (4, 4)), ("a", 257, (4, 4))],
     Refusal.EXPORTER_BYTES),
    ("max_templates", 2, [("a", 256, (4,)), ("b", 256, (4,)), ("c", 256, (4,))],
     Refusal.TOTAL_TEMPLATES),
    ("max_bytes", 20, [("a", 256, (4, 4)), ("b", 256, (4, 4))], Refusal.TOTAL_BYTES),
]  # fmt: skip
ADDRESSES = {"a": "192.0.2.1", "b": "192.0.2.2", "c": "192.0.2.3"}


@pytest.mark.parametrize(("bound", "value", "learn", "refusal"), BOUNDS)
def test_a_template_over_a_bound_is_refused_and_counted(
    bound: str, value: int, learn: list[tuple[str, int, tuple[int, ...]]], refusal: Refusal
) -> None:
    cache = TemplateCache(**{bound: value})
    events = [cache.learn(scope(ADDRESSES[e]), tmpl(t, *f), 0.0) for e, t, f in learn]
    assert events[:-1] == [TemplateEvent.LEARNED] * (len(learn) - 1)
    assert events[-1] is TemplateEvent.REFUSED
    stats = cache.statistics()
    assert stats.refused[refusal] == 1
    assert stats.templates == len(learn) - 1
    last = learn[-1]
    assert cache.lookup(scope(ADDRESSES[last[0]]), last[1], 4) is None


def test_an_exporter_at_its_bound_can_still_refresh_and_redefine_what_it_has() -> None:
    cache = TemplateCache(max_templates_per_exporter=1)
    cache.learn(scope(), tmpl(256, 4), 0.0)
    assert cache.learn(scope(), tmpl(256, 4), 1.0) is TemplateEvent.REFRESHED
    assert cache.learn(scope(), tmpl(256, 2), 2.0) is TemplateEvent.REPLACED
    assert cache.learn(scope("192.0.2.9"), tmpl(256, 4), 2.0) is TemplateEvent.LEARNED


def test_a_redefinition_refused_by_a_bound_forgets_the_old_definition() -> None:
    cache = TemplateCache(max_bytes_per_exporter=template_size(tmpl(256, 4)))
    cache.learn(scope(), tmpl(256, 4), 0.0)
    assert cache.learn(scope(), tmpl(256, 4, 4), 1.0) is TemplateEvent.REFUSED
    # The exporter said the old one no longer holds: decoding with it would be wrong.
    assert cache.lookup(scope(), 256, 4) is None
    assert cache.statistics().per_exporter == {}


def test_template_size_is_the_wire_size() -> None:
    assert template_size(tmpl(256, 4, 2)) == 4 + 2 * 4
    assert template_size(tmpl(256, 4, 2, options=True)) == 6 + 2 * 4
    enterprise = Template(template_id=256, fields=(FieldSpec(element=1, length=4, enterprise=9),))
    assert template_size(enterprise) == 4 + 8


def test_a_template_not_sent_for_max_age_expires_and_a_refresh_keeps_it() -> None:
    cache = TemplateCache(max_age=100.0)
    cache.learn(scope(), tmpl(256), 0.0)
    cache.learn(scope(), tmpl(257), 0.0)
    cache.learn(scope(), tmpl(256), 50.0)  # refreshed
    assert cache.tick(99.9) == 0
    assert cache.tick(100.0) == 1
    assert cache.lookup(scope(), 257, 10) is None
    assert cache.lookup(scope(), 256, 10) is not None
    assert cache.tick(150.0) == 1
    stats = cache.statistics()
    assert (stats.templates, stats.bytes, stats.exporters) == (0, 0, 0)
    assert stats.events["expired"] == 2


def test_the_default_max_age_is_a_day() -> None:
    cache = TemplateCache()
    cache.learn(scope(), tmpl(256), 0.0)
    assert cache.tick(DAY - 1) == 0
    assert cache.tick(DAY) == 1


FITS = [
    # (field lengths, set body length, fits)
    ((4, 4, 2), 9, False),  # shorter than one record
    ((4, 4, 2), 10, True),
    ((4, 4, 2), 13, True),  # 3 bytes of padding
    ((4, 4, 2), 14, False),  # 4 left over: not padding, a record that does not fit
    ((4, 4, 2), 30, True),
    ((2,), 3, True),  # 1 byte left, less than a record
    ((2,), 6, True),
    ((1,), 7, True),  # a 1-byte record leaves nothing over
    ((VARIABLE_LENGTH, 8), 8, False),  # less than the minimum (1-byte length prefix)
    ((VARIABLE_LENGTH, 8), 9, True),
    ((VARIABLE_LENGTH, 8), 400, True),
]


@pytest.mark.parametrize(("lengths", "length", "expected"), FITS)
def test_fits_checks_a_set_length_against_a_template(
    lengths: tuple[int, ...], length: int, expected: bool
) -> None:
    assert fits(tmpl(256, *lengths), length) is expected


def stored(s: TemplateScope, t: Template, at: float) -> StoredTemplate:
    return StoredTemplate(scope=s, template=t, learned_at=at, refreshed_at=at)


def test_a_restored_template_serves_data_that_fits_it_and_its_records_are_counted_apart() -> None:
    cache = TemplateCache()
    assert cache.restore([stored(scope(), tmpl(256, 4, 4, 2), 0.0)], 10.0) == 1
    known = cache.lookup(scope(), 256, 20)
    assert known is not None
    assert known.restored
    cache.count_restored_records(2)
    stats = cache.statistics()
    assert (stats.restored, stats.events["restored"], stats.records_from_restored) == (1, 1, 2)


def test_a_restored_template_that_a_data_set_does_not_fit_is_dropped() -> None:
    cache = TemplateCache()
    cache.restore([stored(scope(), tmpl(256, 4, 4, 2), 0.0)], 10.0)
    assert cache.lookup(scope(), 256, 14) is None  # the exporter changed its template
    assert cache.lookup(scope(), 256, 20) is None  # and the restored one is gone for good
    stats = cache.statistics()
    assert (stats.templates, stats.restored, stats.events["restored_mismatch"]) == (0, 0, 1)


def test_a_live_template_is_not_dropped_when_a_set_does_not_fit() -> None:
    cache = TemplateCache()
    cache.learn(scope(), tmpl(256, 4, 4, 2), 0.0)
    known = cache.lookup(scope(), 256, 14)  # the decoder counts the short record
    assert known is not None
    assert not known.restored


@pytest.mark.parametrize(
    ("sent", "event"),
    [(tmpl(256, 4, 4, 2), TemplateEvent.REFRESHED), (tmpl(256, 4), TemplateEvent.REPLACED)],
)
def test_the_first_template_the_exporter_sends_replaces_the_restored_one(
    sent: Template, event: TemplateEvent
) -> None:
    cache = TemplateCache()
    cache.restore([stored(scope(), tmpl(256, 4, 4, 2), 0.0)], 10.0)
    assert cache.learn(scope(), sent, 11.0) is event
    known = cache.lookup(scope(), 256, 40)
    assert known is not None
    assert known.template == sent
    assert not known.restored
    assert cache.statistics().restored == 0


def test_restore_drops_stale_templates_clamps_future_times_and_applies_the_bounds() -> None:
    cache = TemplateCache(max_age=100.0, max_templates_per_exporter=2)
    items = [
        stored(scope(), tmpl(256), 0.0),  # stale at 100
        stored(scope(), tmpl(257), 50.0),
        stored(scope(), tmpl(258), 1e12),  # a clock that was ahead: taken as now
        stored(scope(), tmpl(259), 40.0),  # the oldest: over the per-exporter bound
    ]
    assert cache.restore(items, 100.0) == 2
    stats = cache.statistics()
    assert stats.events["expired"] == 1
    assert stats.refused["exporter_templates"] == 1
    times = {s.template.template_id: s.refreshed_at for s in cache.snapshot()}
    assert times == {257: 50.0, 258: 100.0}
    assert cache.tick(150.0) == 1  # 257 is due first, then 258
    assert cache.tick(200.0) == 1


def test_restore_is_refused_on_a_cache_that_already_learned() -> None:
    cache = TemplateCache()
    cache.learn(scope(), tmpl(256), 0.0)
    with pytest.raises(RuntimeError):
        cache.restore([], 0.0)


def test_statistics_count_templates_and_bytes_per_exporter() -> None:
    cache = TemplateCache()
    cache.learn(scope("192.0.2.1", 1), tmpl(256, 4), 0.0)
    cache.learn(scope("192.0.2.1", 2), tmpl(256, 4, 4), 0.0)
    cache.learn(scope("2001:db8::1", 1, 10), tmpl(300, 4), 0.0)
    stats = cache.statistics()
    assert stats.per_exporter == {"192.0.2.1": (2, 8 + 12), "2001:db8::1": (1, 8)}
    assert (stats.templates, stats.bytes, stats.exporters) == (3, 28, 2)
    assert set(stats.events) == {e.value for e in TemplateEvent}
    assert set(stats.refused) == {r.value for r in Refusal}


def test_a_flood_of_100000_template_ids_and_domains_from_one_exporter_stays_capped() -> None:
    cache = TemplateCache()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(100_000):
            domain, template_id = divmod(n, 65_280)
            cache.learn(scope(domain=domain), tmpl(256 + template_id, 4, 4, 2, 1), float(n))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    stats = cache.statistics()
    assert stats.templates == 1024  # DEFAULT_MAX_TEMPLATES_PER_EXPORTER
    assert stats.refused["exporter_templates"] == 100_000 - 1024
    assert stats.per_exporter == {"192.0.2.1": (1024, 1024 * template_size(tmpl(256, 4, 4, 2, 1)))}
    assert grown < 2 * 1024 * 1024, grown  # measured: 0.84 MB for 1,024 templates


def test_a_flood_of_100000_forged_exporters_stays_capped_in_total() -> None:
    cache = TemplateCache()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(100_000):
            address = f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"
            cache.learn(scope(address), tmpl(256, 4, 4, 2, 1), float(n))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    stats = cache.statistics()
    assert stats.templates == stats.exporters == 16_384  # DEFAULT_MAX_TEMPLATES
    assert stats.refused["total_templates"] == 100_000 - 16_384
    assert grown < 24 * 1024 * 1024, grown  # measured: 13.5 MB for 16,384 templates
    cache.tick(100_000.0 + DAY)
    assert len(cache) == 0
    assert cache.statistics().exporters == 0


EXPORTERS = ["192.0.2.1", "192.0.2.2", "2001:db8::1"]
SHAPES = [(4,), (4, 4), (4, 4, 2, 1), (VARIABLE_LENGTH, 2)]


class CacheMachine(RuleBasedStateMachine):
    """The cache against a plain dict model, persisted and restored along the way."""

    LIMITS: ClassVar[dict[str, float]] = {
        "max_templates_per_exporter": 3,
        "max_bytes_per_exporter": 40,
        "max_templates": 5,
        "max_bytes": 80,
        "max_age": 50.0,
    }

    def __init__(self) -> None:
        super().__init__()
        self.cache = TemplateCache(**self.LIMITS)  # type: ignore[arg-type]
        self.now = 0.0
        # key -> (template, refreshed_at, restored)
        self.model: dict[tuple[TemplateScope, int], tuple[Template, float, bool]] = {}

    def usage(self, exporter: str) -> tuple[int, int]:
        sizes = [
            template_size(t) for (s, _), (t, _, _) in self.model.items() if s.exporter == exporter
        ]
        return len(sizes), sum(sizes)

    @rule(
        exporter=st.sampled_from(EXPORTERS),
        domain=st.integers(0, 1),
        version=st.sampled_from([9, 10]),
        template_id=st.integers(256, 258),
        shape=st.sampled_from(SHAPES),
    )
    def learn(
        self, exporter: str, domain: int, version: int, template_id: int, shape: tuple[int, ...]
    ) -> None:
        s = scope(exporter, domain, version)
        t = tmpl(template_id, *shape)
        key = (s, template_id)
        old = self.model.get(key)
        event = self.cache.learn(s, t, self.now)
        if old is not None and old[0] == t:
            assert event is TemplateEvent.REFRESHED
            self.model[key] = (t, self.now, False)
            return
        count, used = self.usage(exporter)
        grow = template_size(t) - (template_size(old[0]) if old else 0)
        total = sum(template_size(m[0]) for m in self.model.values())
        refused = (
            (old is None and count >= 3)
            or used + grow > 40
            or (old is None and len(self.model) >= 5)
            or total + grow > 80
        )
        if refused:
            assert event is TemplateEvent.REFUSED
            self.model.pop(key, None)
        else:
            assert event is (TemplateEvent.LEARNED if old is None else TemplateEvent.REPLACED)
            self.model[key] = (t, self.now, False)

    @rule(seconds=st.sampled_from([0.0, 1.0, 20.0, 49.0, 50.0]))
    def tick(self, seconds: float) -> None:
        self.now += seconds
        expired = self.cache.tick(self.now)
        stale = [k for k, (_, at, _) in self.model.items() if at <= self.now - 50.0]
        assert expired == len(stale)
        for k in stale:
            del self.model[k]

    @rule(
        exporter=st.sampled_from(EXPORTERS),
        template_id=st.integers(256, 258),
        length=st.integers(0, 24),
    )
    def lookup(self, exporter: str, template_id: int, length: int) -> None:
        key = (scope(exporter, 0, 9), template_id)
        known = self.cache.lookup(key[0], template_id, length)
        found = self.model.get(key)
        if found is None or (found[2] and not fits(found[0], length)):
            assert known is None
            self.model.pop(key, None)
        else:
            assert known is not None
            assert (known.template, known.restored) == (found[0], found[2])

    @rule()
    def restart(self) -> None:
        """Save, restart, restore: every template comes back, marked restored."""
        data, omitted = encode_templates(self.cache.snapshot())
        assert omitted == 0
        loaded = decode_templates(data)
        assert loaded.status == "ok"
        self.cache = TemplateCache(**self.LIMITS)  # type: ignore[arg-type]
        assert self.cache.restore(loaded.templates, self.now) == len(self.model)
        self.model = {k: (t, at, True) for k, (t, at, _) in self.model.items()}

    @invariant()
    def matches_the_model(self) -> None:
        stats = self.cache.statistics()
        assert stats.templates == len(self.model) <= 5
        assert stats.bytes == sum(template_size(t) for t, _, _ in self.model.values()) <= 80
        assert stats.restored == sum(r for _, _, r in self.model.values())
        for exporter, (count, used) in stats.per_exporter.items():
            assert (count, used) == self.usage(exporter)
            assert count <= 3
            assert used <= 40
        assert {(s.scope, s.template) for s in self.cache.snapshot()} == {
            (k[0], t) for k, (t, _, _) in self.model.items()
        }


CacheMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_the_cache_keeps_to_its_model_and_its_bounds = CacheMachine.TestCase
