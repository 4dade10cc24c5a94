"""Rewrite the golden copies of the compiled fast path, after a deliberate change:

    cd <worktree> && PYTHONPATH=$PWD python3 tests/render/golden/regenerate.py

then read the diff (``git diff tests/render/golden``): it is the change in the code that
runs for every record. tests/render/test_golden.py fails until the copies match again.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/, where render.golden_templates lives

from render.golden_templates import golden_sources  # noqa: E402


def main() -> None:
    for name, source in golden_sources().items():
        path = HERE / name
        path.write_text(source)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
