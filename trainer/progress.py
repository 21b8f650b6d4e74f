"""The trainer's progress: step / total, examples/s, loss and time left; batches evaluated.

These hooks replace TensorFlow's per-100-step log lines (silenced by default, see
common/console.py) with one bar on a terminal, or a plain line every few seconds in a log,
and stop the loop after the step in which a Ctrl-C or SIGTERM arrived, even one whose
KeyboardInterrupt a finalizer swallowed (`common.process.raise_if_stopped`).
The model_fn puts its training loss into the `LOSS` collection; on a TPU the loss lives inside
the TPU's training loop and the line goes without it.
"""

from __future__ import annotations

import logging
import math

import tensorflow as tf

from common import process
from common.progress import DEFAULT_EVERY_S, Progress

LOSS = "trainer_progress_loss"
"""The graph collection the model_fn adds its training loss to, for the progress line."""

LOG = logging.getLogger("trainer")


class TrainingProgress(tf.compat.v1.train.SessionRunHook):
    """Reports the global step against --train-steps, examples/s, the loss and time left.

    Args:
      total_steps: the step training ends at (--train-steps).
      batch_size: the global batch, for examples/s.
      every_s: seconds between two plain lines (no terminal).
      bar: as `common.progress.Progress` takes it (None: a bar on a terminal).
    """

    def __init__(
        self, total_steps: int, batch_size: int, every_s: float = DEFAULT_EVERY_S, bar=None
    ):
        self._total = total_steps
        self._batch_size = batch_size
        self._every_s = every_s
        self._bar = bar
        self._progress: Progress | None = None

    def begin(self):
        self._step = tf.compat.v1.train.get_global_step()
        losses = tf.compat.v1.get_collection(LOSS)
        self._loss = losses[-1] if losses else None

    def after_create_session(self, session, coord):
        self._progress = Progress(
            LOG, "training", self._total, "steps", every_s=self._every_s, bar=self._bar
        )

    def before_run(self, run_context):
        fetches = {"step": self._step}
        if self._loss is not None:
            fetches["loss"] = self._loss
        return tf.compat.v1.train.SessionRunArgs(fetches)

    def after_run(self, run_context, run_values):
        results = run_values.results
        rate = self._progress.rate() * self._batch_size
        detail = f"{rate:,.0f} examples/s"
        if "loss" in results and math.isfinite(results["loss"]):
            detail += f", loss {results['loss']:.4f}"
        self._progress.update(int(results["step"]), detail)
        # A Ctrl-C or SIGTERM whose KeyboardInterrupt a finalizer swallowed (TensorFlow's
        # run them often) stops training here, after this step, as an unswallowed one does.
        process.raise_if_stopped()

    def end(self, session):
        if self._progress is not None:
            self._progress.close()


class EvaluationProgress(tf.compat.v1.train.SessionRunHook):
    """Reports the batches evaluated, of `total_batches` when known.

    Args:
      what: the split evaluated ("evaluating on eval").
      total_batches: the batches the evaluation will read, or None.
      every_s, bar: as `TrainingProgress` takes them.
    """

    def __init__(
        self, what: str, total_batches: int | None, every_s: float = DEFAULT_EVERY_S, bar=None
    ):
        self._what = what
        self._total = total_batches
        self._every_s = every_s
        self._bar = bar
        self._progress: Progress | None = None
        self._done = 0

    def after_create_session(self, session, coord):
        self._done = 0
        self._progress = Progress(
            LOG, self._what, self._total, "batches", every_s=self._every_s, bar=self._bar
        )

    def after_run(self, run_context, run_values):
        self._done += 1
        self._progress.update(self._done)
        process.raise_if_stopped()  # as in TrainingProgress

    def end(self, session):
        if self._progress is not None:
            self._progress.close()


def log_trained(steps: int, seconds: float, batch_size: int) -> None:
    """The run's training speed: over its training alone, not the evaluations between (each
    builds and loads a graph and reads the validation split)."""
    LOG.info(
        "Trained %d steps in %.1f s of training (%.1f steps/s, %.0f examples/s)",
        steps,
        seconds,
        steps / max(seconds, 1e-9),
        steps * batch_size / max(seconds, 1e-9),
    )


def eval_batches(rows: int, batch_size: int, eval_steps: int | None) -> int:
    """The batches an evaluation of `rows` reads: all of them, or --eval-steps at most."""
    batches = math.ceil(rows / batch_size) if rows else 0
    return min(batches, eval_steps) if eval_steps else batches
