#!/usr/bin/env bash
# Build the documentation site into docs/_build/html with warnings as errors; every example of the gallery
# (examples/plot_*.py) is executed on the CPU during the build.
#   bash scripts/docs.sh                 set up .venv (scripts/setup.sh + the docs extra), clean build
#   DOCS_PYTHON=/path/to/python bash scripts/docs.sh
#                                        use an existing environment that has the docs extra; no setup
# Extra arguments go to sphinx-build (e.g. -D plot_gallery=0 to skip running the examples).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${DOCS_PYTHON:-}" ]; then
    bash scripts/setup.sh
    .venv/bin/python -m pip install -q -e ".[docs]"
    DOCS_PYTHON=.venv/bin/python
fi
# a clean build: stale autosummary stubs or gallery pages must not hide a warning
rm -rf docs/_build docs/auto_examples docs/generated docs/sg_execution_times.rst
export MPLBACKEND=Agg
start=$(date +%s)
"$DOCS_PYTHON" -m sphinx -b html -W --keep-going -n -q docs docs/_build/html "$@"
echo "docs built in $(( $(date +%s) - start )) s: docs/_build/html/index.html"
