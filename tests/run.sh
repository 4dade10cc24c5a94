#!/usr/bin/env bash
# The test command: install what is missing, lint, type-check, run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
python3 -m ruff check relay tests bench
python3 -m ruff format --check relay tests bench
python3 -m mypy
python3 -m pytest "$@"
