#!/usr/bin/env bash
# Regenerates every generated file an op or layer change can make stale, in one command:
#   docs/ops.md                      the op reference (archcomp ops --markdown; tests/test_docs.py)
#   docs/architecture.dot and .svg   the layer picture (scripts/architecture.py; tests/test_layers.py)
#   diagrams/                        every spec's drawing (scripts/diagrams.sh; tests/test_draw.py)
#   tests/golden/specs/*.dot         every shipped spec's figure as DOT (tests/test_golden_dot.py)
#   tests/specs/invalid/**.yaml      the expected message below each case's marker line
#                                    (ARCHCOMP_UPDATE_GOLDEN=1; tests/test_invalid_specs.py)
# Review `git diff` afterwards: a changed golden message is a changed user-facing error.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/archcomp ] || scripts/setup.sh
.venv/bin/archcomp ops --markdown > docs/ops.md.tmp && mv docs/ops.md.tmp docs/ops.md
.venv/bin/python scripts/architecture.py
scripts/diagrams.sh
ARCHCOMP_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_invalid_specs.py
ARCHCOMP_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_golden_dot.py
git status --short docs diagrams tests/specs/invalid tests/golden
