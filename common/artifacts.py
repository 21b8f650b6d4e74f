"""Names and file access for the pipeline's output directory (OUTPUT/).

Everything downstream finds the pipeline's artifacts through these names, so the layout is
written down once. Paths may be local or `gs://`; local paths are read with plain Python and
only remote ones import TensorFlow's file system layer, which keeps the planner fast.
"""

from __future__ import annotations

import json
import os
from typing import Any

STATS = "stats.json"
CONFIG = "config.json"
PLAN = "embedding_plan.json"
SUCCESS = "_SUCCESS"
REPORT = "report.html"
DATA_DIR = "data"
REJECTED_DIR = "rejected"
TRAIN_PREFIX = "train"
EVAL_PREFIX = "eval"
TFRECORD_SUFFIX = ".tfrecord.gz"


class PipelineOutputError(RuntimeError):
    """An OUTPUT directory that is missing, unfinished or not a pipeline output."""


def _is_remote(path: str) -> bool:
    return "://" in path


def join(*parts: str) -> str:
    if _is_remote(parts[0]):
        return "/".join(p.rstrip("/") for p in parts)
    return os.path.join(*parts)


def exists(path: str) -> bool:
    if _is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def read_text(directory: str, name: str) -> str:
    path = join(directory, name)
    if _is_remote(path):
        import tensorflow as tf

        with tf.io.gfile.GFile(path) as f:
            return f.read()
    with open(path) as f:
        return f.read()


def write_text(directory: str, name: str, text: str) -> str:
    path = join(directory, name)
    if _is_remote(path):
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "w") as f:
            f.write(text)
    else:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return path


def read_json(directory: str, name: str) -> Any:
    return json.loads(read_text(directory, name))


def write_json(directory: str, name: str, value: Any) -> str:
    return write_text(directory, name, json.dumps(value, indent=2) + "\n")


def require_complete(pipeline_output: str) -> None:
    """Refuses a pipeline output that a run did not finish.

    Raises:
      PipelineOutputError: OUTPUT does not exist or has no `_SUCCESS` marker.
    """
    if not exists(pipeline_output):
        raise PipelineOutputError(
            f"{pipeline_output}: no such pipeline output; run `python -m pipeline "
            "--config C --input PATTERN --output OUTPUT` first"
        )
    if not exists(join(pipeline_output, SUCCESS)):
        raise PipelineOutputError(
            f"{pipeline_output}: no {SUCCESS} marker, so the pipeline run that wrote it did "
            "not finish; rerun the pipeline (with --overwrite) before planning or training"
        )


def data_pattern(pipeline_output: str, split: str) -> str:
    """The glob of a split's transformed TFRecords."""
    return join(pipeline_output, DATA_DIR, f"{split}-*{TFRECORD_SUFFIX}")


def data_files(pipeline_output: str, split: str) -> list[str]:
    """The transformed TFRecord files of a split ("train" or "eval"), sorted."""
    import tensorflow as tf

    return sorted(tf.io.gfile.glob(data_pattern(pipeline_output, split)))
