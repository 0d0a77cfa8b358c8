#!/usr/bin/env bash
# Regenerates diagrams/: the SVG and PNG of every model spec in specs/ (the one documented
# command; tests/test_draw.py fails when a checked-in diagram is out of date with its spec).
# Needs Graphviz's dot (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/archcomp ] || scripts/setup.sh
for spec in specs/*.yaml; do
  # A file of blocks only (no 'nodes') is a library, not a model: nothing to draw.
  if ! .venv/bin/python -c 'import sys; from archcomp.frontend.build import load_source; sys.exit(0 if load_source(sys.argv[1]).spec.nodes else 1)' "$spec"; then
    continue
  fi
  for fmt in svg png; do
    .venv/bin/archcomp draw "$spec" --format "$fmt"
  done
done
