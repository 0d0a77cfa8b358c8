#!/usr/bin/env bash
# The whole test suite: installs what is missing, then ruff, mypy and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check archcomp tests benchmarks scripts
.venv/bin/ruff format --check archcomp tests benchmarks scripts
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
