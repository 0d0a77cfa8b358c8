#!/usr/bin/env bash
# Regenerates requirements/lock.txt, the pinned versions of everything scripts/setup.sh installs,
# from pyproject.toml and requirements/lock.in, for Linux (x86-64, arm64) and macOS at once
# (uv's universal resolution). Pins already in the lock are kept unless a range excludes them;
# arguments go to `uv pip compile`: `--upgrade` takes the newest versions the ranges allow,
# `--upgrade-package NAME` one package. The next scripts/setup.sh installs the new lock.
set -euo pipefail
cd "$(dirname "$0")/.."
lock=requirements/lock.txt
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
# uv is itself pinned by the lock, so two people regenerating it run the same resolver.
if [ ! -x .venv/bin/uv ]; then
  pins=(); [ -f "$lock" ] && pins=(-c "$lock")
  .venv/bin/python -m pip install -q --disable-pip-version-check "${pins[@]}" uv
fi
.venv/bin/uv pip compile --quiet --universal --python-version 3.11 \
  pyproject.toml requirements/lock.in --extra dev \
  --custom-compile-command scripts/lock.sh -o "$lock" "$@"
echo "lock: wrote $lock ($(grep -c '==' "$lock") pins)"
