"""Rewrite the golden copies of the compiled fast path, after a deliberate change:

    cd <worktree> && PYTHONPATH=$PWD python3 tests/render/golden/regenerate.py

then read the diff (``git diff tests/render/golden``): it is the change in the code that
runs for every record. tests/render/test_golden.py fails until the copies match again.
"""

from __future__ import annotations

from pathlib import Path

from relay.flows import LAYOUTS
from relay.render.compiled import compile_lines
from relay.render.options import BODIES

HERE = Path(__file__).resolve().parent


def golden_name(version: int, body: str) -> str:
    return f"netflow-v{version}.{body}.py.txt"


def main() -> None:
    for version, fmt in LAYOUTS.items():
        for body in BODIES:
            path = HERE / golden_name(version, body)
            path.write_text(compile_lines(fmt.layout, body).source())
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
