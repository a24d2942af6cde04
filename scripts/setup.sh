#!/usr/bin/env bash
# Create .venv and install selfdistill with its neural extras and dev tools. Idempotent.
# torch 2.14.1 + torchvision 0.29.1 is the pair that installs together on this kind of machine (CPU or GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[torch,dev]"
