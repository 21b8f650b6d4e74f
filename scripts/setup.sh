#!/usr/bin/env bash
# Creates the virtual environment from the pinned lock file (uv.lock): .venv/ in the project
# root, or $UV_PROJECT_ENVIRONMENT. PYTHON picks the interpreter (default python3.11;
# python3.10 is the Python of Cloud TPU VMs). Needs network access to PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
  echo "Installing uv (the lock file's resolver and installer) with pip..."
  python3 -m pip install --quiet "uv==0.13.9"
fi
PYTHON="${PYTHON:-python3.11}"
# A pyenv shim names versions that are installed but not selected; use the installed one.
if ! "$PYTHON" --version >/dev/null 2>&1 && command -v pyenv >/dev/null 2>&1; then
  for candidate in "$(pyenv root)"/versions/"${PYTHON#python}"*/bin/"$PYTHON"; do
    if [ -x "$candidate" ]; then PYTHON="$candidate"; break; fi
  done
fi
ENV_DIR="${UV_PROJECT_ENVIRONMENT:-.venv}"
echo "Syncing $ENV_DIR/ from uv.lock with $PYTHON (first run downloads about 1 GB of wheels)..."
# --compile-bytecode: every later start of TensorFlow and Beam skips compiling their sources
# (several seconds a command, and every pipeline run and test pays it).
UV_PYTHON_DOWNLOADS=never uv sync --frozen --extra dev --python "$PYTHON" --compile-bytecode
echo "Environment ready: $ENV_DIR/bin/python ($("$ENV_DIR"/bin/python --version))"
