#!/usr/bin/env bash
# Creates .venv/ in the project root from the pinned lock file (uv.lock).
# Needs Python 3.11 on the PATH (python3.11) and network access to PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
  echo "Installing uv (the lock file's resolver and installer) with pip..."
  python3 -m pip install --quiet "uv==0.13.9"
fi
PYTHON="${PYTHON:-python3.11}"
echo "Syncing .venv/ from uv.lock (first run downloads about 1 GB of wheels)..."
# --compile-bytecode: every later start of TensorFlow and Beam skips compiling their sources
# (several seconds a command, and every pipeline run and test pays it).
uv sync --frozen --extra dev --python "$PYTHON" --compile-bytecode
echo "Environment ready: .venv/bin/python ($(.venv/bin/python --version))"
