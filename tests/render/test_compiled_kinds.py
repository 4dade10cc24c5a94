"""The fast path takes only the kinds it can write; the others are the generic renderer's."""

from __future__ import annotations

import pytest

from relay.flows import LAYOUTS
from relay.flows.layout import Field, Kind, Layout
from relay.render.compiled import compilable, compile_lines


def test_every_legacy_layout_is_compilable() -> None:
    assert all(compilable(fmt.layout) for fmt in LAYOUTS.values())


@pytest.mark.parametrize(
    "field",
    [
        Field(name="x", offset=0, size=3),  # reduced-size integer: unpacks as bytes
        Field(name="x", offset=0, size=16, kind=Kind.IPV6),
        Field(name="x", offset=0, size=5, kind=Kind.STRING),
        Field(name="x", offset=0, size=8, kind=Kind.DATETIME_MS),
    ],
)
def test_a_layout_with_a_template_kind_is_refused_not_miswritten(field: Field) -> None:
    layout = Layout(name="t", size=field.size, fields=(field,))
    assert not compilable(layout)
    with pytest.raises(ValueError, match="fast path cannot write"):
        compile_lines(layout, "json")
