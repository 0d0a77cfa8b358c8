#!/usr/bin/env bash
# Installs whatever is missing for archcomp: the Graphviz system package, a virtual environment
# in .venv with torch==2.13.0 (CPU), the project and its development tools. Idempotent: a second
# run finds everything in place and installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dot >/dev/null 2>&1; then
  echo "setup: installing the Graphviz system package (dot)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq graphviz >/dev/null
  elif command -v brew >/dev/null 2>&1; then
    brew install graphviz
  else
    echo "setup: warning: install Graphviz (https://graphviz.org/download/) for rendered diagrams" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.archcomp-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing torch==2.13.0 (CPU), archcomp and its development tools"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  # Pinned: pip takes the CPU wheel where one is on disk (find-links); elsewhere set
  # PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu to avoid the multi-GB CUDA build.
  .venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi
