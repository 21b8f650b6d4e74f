"""The trainer's checks that need no TensorFlow session: pure and fast."""

import pytest

from common import artifacts
from trainer.checks import TrainerError, check_every_host_has_data


def _manifest(train_sizes):
    files = {
        f"data/train-r-{i:05d}-of-{len(train_sizes):05d}.tfrecord.gz": size
        for i, size in enumerate(train_sizes)
    }
    files["data/eval-r-00000-of-00001.tfrecord.gz"] = 300
    return artifacts.Manifest.of_files("/out", "r", "2026-11-26T00:00:00Z", files)


def test_a_host_that_would_read_only_empty_shards_is_refused():
    # A small split over many shards: shards 1 and 3 hold no examples, and host 1 of 2
    # reads exactly those.
    manifest = _manifest([500, artifacts.EMPTY_SHARD_BYTES, 480, artifacts.EMPTY_SHARD_BYTES])
    with pytest.raises(TrainerError, match=r"host\(s\) 1 of 2 would read only empty train"):
        check_every_host_has_data(manifest, 2)
    check_every_host_has_data(manifest, 1)  # one host reads all four
    check_every_host_has_data(_manifest([500, 21, 480, 22]), 2)  # 21 bytes hold data


@pytest.mark.pipeline_env
def test_the_sinks_empty_shard_has_the_size_the_check_assumes(tmp_path):
    import io

    from pipeline.sinks import _FastGzipFile

    class Raw(io.BytesIO):
        def close(self):
            self.written = self.getvalue()
            super().close()

    raw = Raw()
    _FastGzipFile(raw).close()
    assert len(raw.written) == artifacts.EMPTY_SHARD_BYTES


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--save-checkpoints-steps", "0"], "--save-checkpoints-steps must be >= 1"),
        (["--eval-steps", "0"], "--eval-steps must be >= 1"),
        (["--eval-steps", "-3"], "--eval-steps must be >= 1"),
        (["--eval-steps", "2", "--require-beats-baseline"], "drop --eval-steps"),
        (["--hidden-units", "0,-4"], "--hidden-units must be positive layer sizes"),
    ],
)
def test_trainer_flags_that_cannot_train_are_refused_at_once(flags, message, capsys):
    from trainer import task

    base = ["--pipeline-output", "o", "--model-dir", "m", "--train-steps", "5"]
    with pytest.raises(SystemExit):
        task.parse_args([*base, *flags])
    assert message in capsys.readouterr().err


@pytest.mark.pipeline_env
@pytest.mark.parametrize("value", ["nan", "-1", "1.5"])
def test_pipeline_refuses_a_rejected_fraction_outside_0_1(value):
    from pipeline import run
    from pipeline.input_files import InputError

    argv = ["--config", "c.toml", "--input", "x", "--output", "o"]
    with pytest.raises(InputError, match="--max-rejected-fraction .*give a share in"):
        run.run([*argv, "--max-rejected-fraction", value])


@pytest.mark.pipeline_env
@pytest.mark.parametrize("value", ["-1", "100001"])
def test_pipeline_refuses_a_number_of_shards_out_of_range(value):
    from pipeline import run
    from pipeline.input_files import InputError

    argv = ["--config", "c.toml", "--input", "x", "--output", "o"]
    with pytest.raises(InputError, match=f"--num-shards {value}: give 0 .* up to 100,000"):
        run.run([*argv, "--num-shards", value])


@pytest.mark.pipeline_env
def test_a_run_without_training_rows_is_refused():
    from pipeline import run

    stats = {
        "rows": {"read": 50, "train": 0, "validation": 0, "eval": 0, "rejected": 50},
        "rejected_reasons": {"blank line": 50},
    }
    with pytest.raises(run.TooManyRejected) as error:
        run.check_rejected(stats, 1.0, "/staging/rejected", "/out")
    assert str(error.value) == (
        "no training row: of 50 rows read, 50 were rejected (commonest reasons: blank line "
        "(50); every rejected row, with its reason, is in /staging/rejected); nothing to "
        "train on (nothing was committed: /out is as it was)."
    )


@pytest.mark.trainer_env
def test_no_tpu_behind_the_address_is_one_clear_error(monkeypatch):
    # TPUEstimator's own query answers 0 cores when nothing is there; dividing the batch by
    # it was a ZeroDivisionError.
    from tensorflow.python.tpu import tpu_system_metadata

    from trainer import tpu_setup

    class NoCluster:
        def cluster_spec(self):
            import tensorflow as tf

            return tf.train.ClusterSpec({})

        def master(self):
            return "grpc://10.0.0.1:8470"

    def nothing_there(master, cluster_def=None, query_topology=False):
        return tpu_system_metadata.TPUSystemMetadata(0, 0, 0, None, [])

    monkeypatch.setattr(tpu_system_metadata, "_query_tpu_system_metadata", nothing_there)
    with pytest.raises(TrainerError, match=r"no TPU found at grpc://10\.0\.0\.1:8470"):
        tpu_setup.tpu_topology(NoCluster())


def _trained_folder(model_dir: str):
    """The files a trained model directory holds (names as the trainer writes them)."""
    from common import storage

    for name in (
        "checkpoint",
        "graph.pbtxt",
        "model.ckpt-60.index",
        "model.ckpt-60.data-00000-of-00001",
        "events.out.tfevents.1796611508.vm",
        "training_config.json",
        "embedding_plan.json",
        "eval_metrics.json",
        "selection.json",
        "best/model.ckpt-60.index",
        "start/model.ckpt-0.meta",
        "eval_validation/events.out.tfevents.1796611510.vm",
        "export/1796611536/saved_model.pb",
        "export/temp-1796611599/variables/variables.index",
        # what a stop in the middle of a save leaves, and a profile
        "model.ckpt-14_temp/part-00000-of-00001.data-00000-of-00001.tempstate8731",
        "graph.pbtxt.tmp8a7b61",
        "plugins/profile/2026_12_07_03_00_00/host.xplane.pb",
    ):
        storage.write_text(storage.join(model_dir, name), "x")


@pytest.mark.parametrize(
    "foreign",
    [
        "notes.txt",
        "best/mine.txt",
        "start/sub/model.ckpt-0.index",
        "data/train.tfrecord.gz",
        "export/README.txt",
        "export/my_backup/saved_model.pb",
        "eval_mine/notes.txt",
    ],
)
def test_a_model_dir_holding_files_the_trainer_does_not_write_is_refused(any_root, foreign):
    # The trainer deletes and replaces its own files there (best/, start/, unfinished
    # exports): a folder holding anything else is not its own, and nothing is touched.
    # Locally and on Cloud Storage (the emulator), where folders are name prefixes.
    from common import storage
    from trainer.checks import check_model_dir_is_ours

    model_dir = storage.join(any_root, "model")
    check_model_dir_is_ours(model_dir)  # a new folder
    _trained_folder(model_dir)
    check_model_dir_is_ours(model_dir)  # one it trained in
    storage.write_text(storage.join(model_dir, foreign), "mine")
    with pytest.raises(TrainerError, match=f"holds {foreign}, which the trainer does not write"):
        check_model_dir_is_ours(model_dir)
    assert storage.read_text(storage.join(model_dir, foreign)) == "mine"


def test_a_model_dir_inside_the_pipeline_output_is_refused(tmp_path):
    from trainer.checks import check_model_dir_apart

    output = tmp_path / "out"
    output.mkdir()
    (tmp_path / "link").symlink_to(output)
    for model_dir in (output, output / "model", tmp_path / "link" / "model"):
        with pytest.raises(TrainerError, match="is inside the pipeline output"):
            check_model_dir_apart(str(model_dir), str(output))
    check_model_dir_apart(str(tmp_path / "out-model"), str(output))  # a sibling is fine
    # A model dir holding the output (named as the trainer's export/ would be) is refused.
    with pytest.raises(TrainerError, match="holds the pipeline output"):
        check_model_dir_apart(str(tmp_path), str(tmp_path / "export"))
    for bad in ("gs://", "gs://bucket", str(tmp_path / "m*"), str(tmp_path / "m[1]")):
        with pytest.raises(TrainerError, match=r"--model-dir .*(gs://BUCKET/PATH|pattern)"):
            check_model_dir_apart(bad, str(output))


def test_resuming_with_flags_that_reorder_the_data_is_warned_of(tmp_path, caplog, monkeypatch):
    import argparse
    import json
    import logging

    from trainer import prepare
    from trainer.prepare import warn_of_another_data_order

    monkeypatch.setattr(prepare, "checkpoint_step", lambda model_dir: 180)
    saved = {"seed": 42, "batch_size": 64, "eval_every_steps": 60}
    (tmp_path / "training_config.json").write_text(json.dumps(saved))

    def warned(**flags):
        given = {"train_steps": 300, **saved, **flags}
        args = argparse.Namespace(model_dir=str(tmp_path), **given)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="trainer"):
            warn_of_another_data_order(args)
        return caplog.messages

    assert warned() == []
    (message,) = warned(seed=7, batch_size=32)
    assert message.startswith(
        "Resuming from step 180 with --seed 42 -> 7, --batch-size 64 -> 32: the data is read "
        "in another order"
    )
    assert warned(seed=7, train_steps=180) == []  # nothing to train: nothing read
