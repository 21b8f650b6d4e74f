#!/usr/bin/env bash
# Creates the environments from the pinned lock file (uv.lock), one per role:
#   bash scripts/setup.sh            both, in the project root
#   bash scripts/setup.sh pipeline   .venvs/pipeline/ on Python 3.12: today's tf.Transform,
#                                    TensorFlow and Beam; runs `pipeline` and `embedding`
#   bash scripts/setup.sh trainer    .venv/ on Python 3.11: TensorFlow 2.15 with TPUEstimator;
#                                    runs `embedding` and `trainer`
# For one role, PYTHON picks the interpreter (pipeline: 3.11-3.13; trainer: 3.10 or 3.11,
# python3.10 being the Python of Cloud TPU VMs) and UV_PROJECT_ENVIRONMENT the folder. Without
# a role but with PYTHON set, the role follows from the Python: 3.10 trainer, 3.12+ pipeline.
# Needs network access to PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

WHERE=0
if [ "${1:-}" = --where ]; then WHERE=1; shift; fi  # print the role and folder, set up nothing
ROLE="${1:-${ROLE:-}}"
case "$ROLE" in
  pipeline | trainer | "") ;;
  *) echo "setup.sh: unknown role '$ROLE': use pipeline, trainer, or none for both" >&2; exit 2 ;;
esac

# A pyenv shim names versions that are installed but not selected; use the installed one.
resolve_python() {
  local python="$1"
  if ! "$python" --version >/dev/null 2>&1 && command -v pyenv >/dev/null 2>&1; then
    for candidate in "$(pyenv root)"/versions/"${python#python}"*/bin/"$python"; do
      if [ -x "$candidate" ]; then python="$candidate"; break; fi
    done
  fi
  echo "$python"
}

if [ -z "$ROLE" ] && { [ -n "${PYTHON:-}" ] || [ -n "${UV_PROJECT_ENVIRONMENT:-}" ]; }; then
  python="$(resolve_python "${PYTHON:-python3.11}")"
  minor="$("$python" -c 'import sys; print(sys.version_info[1])' 2>/dev/null || true)"
  case "$minor" in
    10) ROLE=trainer ;;
    12 | 13) ROLE=pipeline ;;
    *) echo "setup.sh: PYTHON/UV_PROJECT_ENVIRONMENT set up one environment: name its role" \
         "(bash scripts/setup.sh pipeline|trainer)" >&2; exit 2 ;;
  esac
fi

if [ -z "$ROLE" ]; then
  if [ "$WHERE" = 1 ]; then echo "pipeline .venvs/pipeline"; echo "trainer .venv"; exit 0; fi
  bash "$0" pipeline
  bash "$0" trainer
  exit 0
fi

if [ "$WHERE" = 1 ]; then
  [ "$ROLE" = pipeline ] && default=.venvs/pipeline || default=.venv
  echo "$ROLE ${UV_PROJECT_ENVIRONMENT:-$default}"
  exit 0
fi
if ! command -v uv >/dev/null 2>&1; then
  echo "Installing uv (the lock file's resolver and installer) with pip..."
  python3 -m pip install --quiet "uv==0.13.9"
fi
if [ "$ROLE" = pipeline ]; then
  PYTHON="$(resolve_python "${PYTHON:-python3.12}")"
  export UV_PROJECT_ENVIRONMENT="${UV_PROJECT_ENVIRONMENT:-.venvs/pipeline}"
else
  PYTHON="$(resolve_python "${PYTHON:-python3.11}")"
  export UV_PROJECT_ENVIRONMENT="${UV_PROJECT_ENVIRONMENT:-.venv}"
fi
ENV_DIR="$UV_PROJECT_ENVIRONMENT"
echo "Syncing the $ROLE environment $ENV_DIR/ from uv.lock with $PYTHON" \
  "(a first run downloads about 1 GB of wheels)..."
# --compile-bytecode: every later start of TensorFlow and Beam skips compiling their sources
# (several seconds a command, and every pipeline run and test pays it).
EXTRAS=(--extra "$ROLE" --extra dev)
if [ "$ROLE" = trainer ]; then EXTRAS+=(--extra trainer-dev); fi
UV_PYTHON_DOWNLOADS=never uv sync --frozen "${EXTRAS[@]}" --python "$PYTHON" --compile-bytecode
echo "The $ROLE environment is ready: $ENV_DIR/bin/python ($("$ENV_DIR"/bin/python --version))"
