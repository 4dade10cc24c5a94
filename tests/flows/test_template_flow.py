"""The sequence the integrator runs: data before its template is held, the template
releases it; a restart between template and data decodes at once from the state file.

The wire decoding is stood in for by cutting fixed-length records out of a set's body:
what is checked here is which bytes, with which header, reach the decoder, and when.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from relay.flows.holding import Holding
from relay.flows.template import FieldSpec, Template, TemplateScope
from relay.flows.template_store import FILE_NAME, Status, load_templates, save_templates
from relay.flows.templates import TemplateCache, TemplateEvent

SCOPE = TemplateScope(exporter="192.0.2.1", domain=0, version=9)
TEMPLATE = Template(
    template_id=260, fields=(FieldSpec(element=8, length=4), FieldSpec(element=2, length=4))
)


@dataclass(frozen=True)
class Header:  # the caller's: for the holding it is opaque
    sequence: int
    uptime_ms: int


def records(template: Template, body: bytes) -> list[bytes]:
    size = template.record_length
    assert size is not None
    return [body[i : i + size] for i in range(0, len(body) - size + 1, size)]


def data_set(
    cache: TemplateCache,
    holding: Holding[tuple[TemplateScope, int], Header],
    header: Header,
    template_id: int,
    body: bytes,
    now: float,
) -> list[tuple[Header, bytes]]:
    """What ingest does with one data set: decode it now, or hold it."""
    known = cache.lookup(SCOPE, template_id, len(body))
    if known is None:
        holding.hold((SCOPE, template_id), SCOPE.exporter, header, body, now)
        return []
    decoded = records(known.template, body)
    if known.restored:
        cache.count_restored_records(len(decoded))
    return [(header, r) for r in decoded]


def template_set(
    cache: TemplateCache,
    holding: Holding[tuple[TemplateScope, int], Header],
    template: Template,
    now: float,
) -> list[tuple[Header, bytes]]:
    """What ingest does with one template: learn it, then decode what waited for it."""
    if cache.learn(SCOPE, template, now) is TemplateEvent.REFUSED:
        return []  # what waits for it expires and is counted as no_template
    out = []
    for held in holding.release((SCOPE, template.template_id)):
        out += data_set(cache, holding, held.header, template.template_id, held.data, now)
    return out


def test_data_before_its_template_is_held_and_released_with_its_own_header() -> None:
    cache = TemplateCache()
    holding: Holding[tuple[TemplateScope, int], Header] = Holding()
    first, second = Header(sequence=1, uptime_ms=1000), Header(sequence=2, uptime_ms=2000)
    assert data_set(cache, holding, first, 260, b"AAAAaaaaBBBBbbbb", 0.0) == []
    assert data_set(cache, holding, second, 260, b"CCCCcccc", 1.0) == []
    assert holding.statistics().sets == 2
    released = template_set(cache, holding, TEMPLATE, 2.0)
    assert released == [(first, b"AAAAaaaa"), (first, b"BBBBbbbb"), (second, b"CCCCcccc")]
    assert holding.statistics().sets == 0
    assert data_set(cache, holding, second, 260, b"DDDDdddd", 3.0) == [(second, b"DDDDdddd")]


def test_data_whose_template_never_comes_expires_and_is_counted() -> None:
    cache = TemplateCache()
    holding: Holding[tuple[TemplateScope, int], Header] = Holding()
    data_set(cache, holding, Header(sequence=1, uptime_ms=0), 261, b"x" * 8, 0.0)
    expired = holding.tick(60.0)
    assert [(h.key, h.data) for h in expired] == [((SCOPE, 261), b"x" * 8)]
    assert holding.statistics().expired == 1
    assert template_set(cache, holding, TEMPLATE, 61.0) == []


def test_a_restart_between_template_and_data_decodes_at_once_from_the_state_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / FILE_NAME
    before = TemplateCache()
    before.learn(SCOPE, TEMPLATE, 100.0)
    save_templates(path, before.snapshot())

    after = TemplateCache()  # the relay restarted
    loaded = load_templates(path)
    assert loaded.status is Status.OK
    assert after.restore(loaded.templates, 200.0) == 1
    holding: Holding[tuple[TemplateScope, int], Header] = Holding()
    header = Header(sequence=9, uptime_ms=5)
    assert data_set(after, holding, header, 260, b"EEEEeeeeFFFFffff", 201.0) == [
        (header, b"EEEEeeee"),
        (header, b"FFFFffff"),
    ]
    stats = after.statistics()
    assert (stats.restored, stats.records_from_restored) == (1, 2)
    # A set the restored template does not fit waits for the real one, which replaces it.
    assert data_set(after, holding, header, 260, b"GGGGggggHHHH", 202.0) == []
    redefined = Template(template_id=260, fields=(*TEMPLATE.fields, FieldSpec(element=1, length=4)))
    assert template_set(after, holding, redefined, 203.0) == [(header, b"GGGGggggHHHH")]
    assert after.statistics().restored == 0
