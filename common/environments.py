"""Which environment runs which command: the pipeline's or the trainer's.

One lock file (uv.lock) holds two environments that cannot be one (pyproject.toml's
`pipeline` and `trainer` extras): the pipeline on today's tf.Transform, TensorFlow and Beam;
the trainer on TensorFlow 2.15, the last TensorFlow with TPUEstimator. They meet only through
files (TFRecords, JSON, the transform graph). The `embedding` planner runs in either.

A command started in the wrong environment stops with one line naming the right one. The
decision reads the installed distributions' metadata only: it imports nothing, so it costs
milliseconds, before TensorFlow is ever imported.
"""

from __future__ import annotations

import importlib.metadata
import sys

PIPELINE = "pipeline"
TRAINER = "trainer"

SETUP = {
    PIPELINE: "the pipeline environment (.venvs/pipeline/, made by `bash scripts/setup.sh "
    "pipeline`; Python 3.11-3.13)",
    TRAINER: "the trainer environment (.venv/, made by `bash scripts/setup.sh trainer`; "
    "Python 3.10-3.11)",
}


class WrongEnvironment(SystemExit):
    """A command was started in an environment that cannot run it; exits with status 2 after
    printing its one line."""


def installed(distribution: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def current() -> str | None:
    """The role of this Python's environment: TRAINER where TPUEstimator is installed,
    PIPELINE where tf.Transform and Beam are without it, else None."""
    if installed("tensorflow-estimator"):
        return TRAINER
    if installed("tensorflow-transform") and installed("apache-beam"):
        return PIPELINE
    return None


def describe() -> str:
    """This environment in words: its Python and its role."""
    role = current()
    what = f"the {role} environment" if role else "an environment with neither role's packages"
    python = ".".join(map(str, sys.version_info[:2]))
    return f"{sys.prefix} (Python {python}) is {what}"


def require(role: str, command: str) -> None:
    """Stops with one line naming the right environment unless this one has `role`.

    Raises:
      WrongEnvironment: this environment is not `role`'s.
    """
    if current() == role:
        return
    sys.stderr.write(f"{command} runs in {SETUP[role]}; {describe()}\n")
    raise WrongEnvironment(2)


STACK = {
    PIPELINE: ("tensorflow", "tensorflow-transform", "tfx-bsl", "apache-beam"),
    TRAINER: ("tensorflow", "tensorflow-estimator", "tensorflow-transform"),
}


def version(role: str) -> str:
    """`--version`'s line: the project's version and what `role` runs on here."""
    project = installed("tpu-embedding-pipeline") or "(not installed)"
    stack = ", ".join(f"{name} {installed(name) or 'missing'}" for name in STACK[role])
    python = ".".join(map(str, sys.version_info[:3]))
    return f"tpu-embedding-pipeline {project} ({role} environment: {stack}; Python {python})"
