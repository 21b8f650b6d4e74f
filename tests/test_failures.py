"""One line for the failures a user can act on (trainer.failures)."""

from __future__ import annotations

import argparse

import tensorflow as tf

from trainer.failures import failure_line
from trainer.tpu_setup import tpu_cluster

ARGS = argparse.Namespace(model_dir="/m/model", pipeline_output="/p/out")


def test_a_diverged_loss_is_one_line():
    line = failure_line(tf.compat.v1.train.NanLossDuringTrainingError(), ARGS)
    assert "loss became NaN" in line and "/m/model" in line


def test_a_restore_failure_names_the_checkpoint_and_a_shard_failure_the_output():
    restore = tf.errors.OutOfRangeError(
        None, None, "Read less bytes than requested [[save/RestoreV2]]"
    )
    assert failure_line(restore, ARGS).startswith("checkpoint /m/model is damaged")
    shard = tf.errors.DataLossError(None, None, "corrupted record at 1234")
    line = failure_line(shard, ARGS)
    assert "/p/out" in line and "checkpoint" not in line
    assert failure_line(ValueError("a bug"), ARGS) is None


def test_a_damaged_best_checkpoint_is_named_not_the_latest():
    # Restoring the copy of the best checkpoint fails: its files are the ones to delete; the
    # latest checkpoint is intact (blaming it sent the user round in a loop).
    damaged = tf.errors.DataLossError(
        None,
        None,
        "Graph execution error:\n\nDetected at node 'save/RestoreV2'\nNode: 'save/RestoreV2'\n"
        "TensorBundle at /m/model/best/model.ckpt-300 shard 0 (320000 bytes): Checksum does "
        "not match: stored 614756214 vs. calculated on the restored bytes 4223340640\n"
        "\t [[{{node save/RestoreV2}}]]",
    )
    line = failure_line(damaged, ARGS)
    assert line.startswith(
        "checkpoint /m/model/best/model.ckpt-300 is damaged or incomplete (TensorBundle at "
        "/m/model/best/model.ckpt-300 shard 0 (320000 bytes): Checksum does not match"
    )
    assert line.endswith(
        "delete /m/model/best (the copy of one checkpoint the run keeps aside); "
        "the next run chooses among the checkpoints it evaluates from then on"
    )


def test_a_shard_gone_during_training_says_the_output_was_rewritten():
    # What reading a shard raises after a pipeline run with --overwrite replaced the output.
    gone = tf.errors.NotFoundError(
        None,
        None,
        "Graph execution error:\n\n/p/out/data/validation-1-00000-of-00001.tfrecord.gz; No "
        "such file or directory\n\t [[{{node IteratorGetNext}}]]",
    )
    line = failure_line(gone, ARGS)
    assert line.startswith("/p/out/data/validation-1-00000-of-00001.tfrecord.gz went missing")
    assert "rewritten or deleted during the run" in line and "\n" not in line
    assert failure_line(tf.errors.NotFoundError(None, None, "/elsewhere/x"), ARGS) is None


def test_an_unreachable_tpu_is_one_line(monkeypatch):
    import pytest

    from trainer.checks import TrainerError

    def unreachable(*args, **kwargs):  # what the Cloud TPU API client raises without access
        raise ConnectionError("Failed to establish a new connection: [Errno 101]\nmore")

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", unreachable)
    args = argparse.Namespace(tpu="no-such-tpu", tpu_zone="us-central1-b", gcp_project="p")
    with pytest.raises(TrainerError, match="TPU 'no-such-tpu' cannot be reached") as refused:
        tpu_cluster(args)
    assert "\n" not in str(refused.value) and "ConnectionError" in str(refused.value)
