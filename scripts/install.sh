#!/usr/bin/env bash
# Set up faceclip on a fresh machine: a virtual environment in .venv with the CPU build of PyTorch.
#   bash scripts/install.sh          # the package with training, evaluation and demo extras
#   bash scripts/install.sh --test   # plus the test tools and Debian's Chromium for the browser test
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: on this platform 2.13.0 is the local CPU wheel; an open range would pull a CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0" || .venv/bin/python -m pip install -q torch
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -m pip install -q -e ".[test]"
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "warning: could not install Debian's chromium; the browser test will be skipped" >&2
    else
      echo "note: install Debian's 'chromium' package to run the browser test" >&2
    fi
  fi
else
  .venv/bin/python -m pip install -q -e ".[all]"
fi
