#!/usr/bin/env bash
# The main job: installs what is missing, then checks, builds and draws the Transformer.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
spec=${1:-specs/transformer.yaml}
[ -f "$spec" ] || spec=specs/mlp.yaml
.venv/bin/archcomp check "$spec"
if .venv/bin/archcomp --help | grep -q ' build '; then .venv/bin/archcomp build "$spec" --force; fi
if .venv/bin/archcomp --help | grep -q ' draw '; then .venv/bin/archcomp draw "$spec"; fi
