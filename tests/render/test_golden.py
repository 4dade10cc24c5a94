"""The compiled fast path's source is kept in tests/render/golden/, one file per (layout,
body), so that a change to the code that runs for every record shows in review. Regenerate
after a deliberate change with ``PYTHONPATH=$PWD python3 tests/render/golden/regenerate.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.flows import LAYOUTS
from relay.flows.layout import Layout
from relay.flows.records import plan_for
from relay.render import Renderer, RenderOptions
from relay.render.options import BODIES, Body

from .golden_templates import TEMPLATES, golden_sources

GOLDEN = Path(__file__).resolve().parent / "golden"
SOURCES = golden_sources()


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_generated_source_is_the_golden_copy(name: str) -> None:
    assert SOURCES[name] == (GOLDEN / name).read_text(), (
        f"the generated code of {name} changed: if deliberate, run "
        "PYTHONPATH=$PWD python3 tests/render/golden/regenerate.py and review the diff"
    )


def test_there_is_a_golden_copy_of_every_legacy_layout_and_real_template() -> None:
    stems = [f"netflow-v{v}" for v in LAYOUTS] + list(TEMPLATES)
    assert set(SOURCES) == {f"{stem}.{body}.py.txt" for stem in stems for body in BODIES}


def test_there_is_no_golden_copy_of_code_that_is_not_generated() -> None:
    assert {p.name for p in GOLDEN.glob("*.py.txt")} == set(SOURCES)


@pytest.mark.parametrize("body", BODIES)
def test_the_renderer_runs_the_template_code_it_shows(body: Body) -> None:
    renderer = Renderer(RenderOptions(body=body))
    template, version = TEMPLATES["softflowd-v9-ipv4"]
    compiled = renderer.compiled_template(plan_for(template, version))
    assert compiled is not None
    # The golden copy names the template by its file; the renderer by its ID.
    golden = (GOLDEN / f"softflowd-v9-ipv4.{body}.py.txt").read_text()
    assert compiled.source().split("\n", 1)[1] == golden.split("\n", 1)[1]


@pytest.mark.parametrize("body", BODIES)
def test_the_renderer_runs_the_source_it_shows(body: Body) -> None:
    renderer = Renderer(RenderOptions(body=body))
    compiled = renderer.compiled(LAYOUTS[5].layout)
    assert compiled.source() == (GOLDEN / f"netflow-v5.{body}.py.txt").read_text()
    assert compiled.build.__code__.co_filename == f"<render netflow v5 {body}>"


def test_compiled_code_is_cached_by_layout_fingerprint() -> None:
    renderer = Renderer()
    layout = LAYOUTS[6].layout
    first = renderer.compiled(layout)
    assert renderer.compiled(layout) is first
    # An equal layout under another name is the same code: found by its fingerprint.
    twin = Layout(name="twin", size=layout.size, fields=layout.fields)
    assert twin.fingerprint == layout.fingerprint
    assert renderer.compiled(twin) is first
