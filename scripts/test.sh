#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the checks: ruff, then the test suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -n 2 --dist loadfile "$@"
