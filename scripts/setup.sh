#!/usr/bin/env bash
# Installs whatever is missing for archcomp: the Graphviz system package, a virtual environment
# in .venv with the project (editable) and its development tools, every package at the version
# requirements/lock.txt pins (torch 2.13.0, CPU). Idempotent: a second run finds everything in
# place and installs nothing; a changed pyproject.toml, lock or this script installs again.
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

# Chromium runs the interactive view's page in tests/test_view_browser.py (skipped without it).
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Chromium (for the browser test of archcomp view)"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; } ||
      echo "setup: warning: could not install Chromium; tests/test_view_browser.py will skip" >&2
  else
    echo "setup: note: install Chromium for tests/test_view_browser.py (it skips without it)" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
lock=requirements/lock.txt
stamp=.venv/.archcomp-installed
# The stamp holds a checksum of what decides the install, so an edit, a pull or a new lock (not
# a file's date) makes the next run install again.
want=$(cat pyproject.toml "$lock" scripts/setup.sh | cksum)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing archcomp and its development tools at the versions in $lock"
  pip_install() { .venv/bin/python -m pip install -q --disable-pip-version-check -c "$lock" "$@"; }
  pip_install pip
  # pip takes torch's CPU wheel where one is on disk (find-links); elsewhere set
  # PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu to avoid the multi-GB CUDA build.
  # The lock pins 2.13.0, which the CPU build 2.13.0+cpu satisfies.
  pip_install --build-constraint "$lock" -e '.[dev]'
  echo "$want" >"$stamp"
fi
