"""What a failed training run says: one line that names the file or the cause.

TensorFlow reports a damaged checkpoint, a damaged data shard and a diverged loss by its own
error types, with messages written for TensorFlow's developers. `failure_line` turns the ones
a user can act on into one line that names the thing to fix; anything else is a bug, and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import re

from trainer.selection import BEST_DIR, START_DIR


def _first_line(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    return (message.splitlines() or [type(error).__name__])[0][:400]


def _about_checkpoint(error: Exception, model_dir: str) -> bool:
    """Whether the error came from reading a checkpoint: TensorFlow names the restore op
    (`save/RestoreV2`) or the checkpoint's path, not the file it could not read."""
    message = getattr(error, "message", None) or str(error)
    node = getattr(getattr(error, "node_def", None), "name", "") or ""
    return (
        node.startswith("save/")
        or "RestoreV2" in message
        or model_dir.rstrip("/") in message
        or "checkpoint" in message.lower()
    )


def _damaged_checkpoint(error: Exception, model_dir: str) -> str:
    """The line for a checkpoint TensorFlow could not read: the one its message names (the
    best or the start checkpoint's copy, or one beside the others), else the latest."""
    import tensorflow as tf

    message = getattr(error, "message", None) or str(error)
    named = re.search(re.escape(model_dir.rstrip("/")) + r"[^\s;:,'\"]*?model\.ckpt-\d+", message)
    checkpoint = named.group(0) if named else tf.train.latest_checkpoint(model_dir) or model_dir
    why = next((line.strip() for line in message.splitlines() if checkpoint in line), None)
    why = why or _first_line(error)
    folder = checkpoint.rsplit("/", 2)[-2] if checkpoint.count("/") >= 2 else ""
    if folder in (BEST_DIR, START_DIR):
        fix = (
            f"delete {checkpoint.rsplit('/', 1)[0]} (the copy of one checkpoint the run keeps "
            "aside); the next run chooses among the checkpoints it evaluates from then on"
        )
    else:
        fix = (
            "delete its files (and its line in MODEL_DIR/checkpoint) to resume from the one "
            "before, or train into a new --model-dir"
        )
    return f"checkpoint {checkpoint} is damaged or incomplete ({why}): {fix}"


def failure_line(error: Exception, args: argparse.Namespace) -> str | None:
    """The one line for a failure the user can act on; None for anything else.

    Args:
      error: what training, evaluation or export raised.
      args: the run's flags (names the model dir and the pipeline output).
    """
    import tensorflow as tf

    if isinstance(error, tf.compat.v1.train.NanLossDuringTrainingError):
        return (
            "the training loss became NaN (the model diverged); nothing was evaluated or "
            f"exported, the checkpoints before it stay in {args.model_dir}: lower "
            "--learning-rate or --embedding-learning-rate, or check the numeric inputs' range"
        )
    damage_types = (tf.errors.DataLossError, tf.errors.NotFoundError, tf.errors.OutOfRangeError)
    if not isinstance(error, damage_types):
        return None
    if _about_checkpoint(error, args.model_dir):
        return _damaged_checkpoint(error, args.model_dir)
    message = getattr(error, "message", None) or str(error)
    output = args.pipeline_output.rstrip("/")
    if isinstance(error, tf.errors.NotFoundError) and output in message:
        missing = re.search(re.escape(output) + r"[^\s;]*", message).group(0)
        return (
            f"{missing} went missing while the trainer read it: the pipeline output was "
            "rewritten or deleted during the run (a pipeline run with --overwrite?); nothing "
            f"was evaluated or exported, the checkpoints stay in {args.model_dir}: rerun the "
            "trainer"
        )
    if isinstance(error, tf.errors.DataLossError):
        from common import artifacts

        # The shard whose content is not the one committed, when the checksums can tell.
        return artifacts.describe_damage(args.pipeline_output) or (
            f"a file of {args.pipeline_output} is damaged ({_first_line(error)}); rerun the "
            "pipeline with --overwrite"
        )
    return None
