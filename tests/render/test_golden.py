"""The compiled fast path's source is kept in tests/render/golden/, one file per (layout,
body), so that a change to the code that runs for every record shows in review. Regenerate
after a deliberate change with ``PYTHONPATH=$PWD python3 tests/render/golden/regenerate.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.flows import LAYOUTS
from relay.flows.layout import Layout
from relay.render import Renderer, RenderOptions
from relay.render.compiled import compile_lines
from relay.render.options import BODIES, Body

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = [(version, body) for version in LAYOUTS for body in BODIES]


@pytest.mark.parametrize(("version", "body"), CASES)
def test_generated_source_is_the_golden_copy(version: int, body: Body) -> None:
    golden = GOLDEN / f"netflow-v{version}.{body}.py.txt"
    generated = compile_lines(LAYOUTS[version].layout, body).source()
    assert generated == golden.read_text(), (
        f"the generated code of v{version} {body} changed: if deliberate, run "
        "PYTHONPATH=$PWD python3 tests/render/golden/regenerate.py and review the diff"
    )


def test_there_is_no_golden_copy_of_code_that_is_not_generated() -> None:
    names = {p.name for p in GOLDEN.glob("*.py.txt")}
    assert names == {f"netflow-v{v}.{b}.py.txt" for v, b in CASES}


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
