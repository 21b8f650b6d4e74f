#!/usr/bin/env bash
# Sets up the environments from the lock file and runs the test suite in each: the pipeline
# environment's tests (.venvs/pipeline/), then the trainer environment's (.venv/); each run
# skips, by marker, the tests of the other. Extra arguments go to pytest.
#   ROLE=pipeline|trainer bash scripts/test.sh            one environment
#   PYTHON=python3.10 UV_PROJECT_ENVIRONMENT=.venv-py310 bash scripts/test.sh
#                                                         one role elsewhere (see setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}" TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
if [ -n "${ROLE:-}${PYTHON:-}${UV_PROJECT_ENVIRONMENT:-}" ]; then
  roles="$(bash scripts/setup.sh --where "${ROLE:-}")"
else
  roles="$(bash scripts/setup.sh --where)"
fi
status=0
while read -r role env_dir; do
  bash scripts/setup.sh "$role"
  echo "== Tests in the $role environment ($env_dir/)"
  "$env_dir/bin/python" -m pytest "$@" || status=$?
done <<< "$roles"
exit "$status"
