#!/usr/bin/env bash
# Sets up the environment from the lock file and runs the test suite. Extra arguments go to
# pytest. PYTHON=python3.10 UV_PROJECT_ENVIRONMENT=.venv-py310 runs it under Python 3.10.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}" TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec "${UV_PROJECT_ENVIRONMENT:-.venv}/bin/python" -m pytest "$@"
