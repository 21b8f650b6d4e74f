"""The trainer on CPU: resume, input parity, export equality, errors.

The TPU path (TPUEstimator's real TPU graphs, built offline) is tested in test_tpu_graph.py.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from common import artifacts, storage
from common.config import read_pipeline_config
from common.plan import EmbeddingPlan
from embedding.columns import bias_feature, bias_features
from tests.conftest import ROOT, raw_example
from trainer import checks, task
from trainer.estimator import build_estimator
from trainer.inputs import make_input_fn

pytestmark = [pytest.mark.slow, pytest.mark.trainer_env]


def _args(output, model_dir, *extra):
    return task.parse_args(
        [
            "--pipeline-output",
            output,
            "--model-dir",
            str(model_dir),
            "--batch-size",
            "64",
            "--save-checkpoints-steps",
            "10",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def trained(small_pipeline_output, tmp_path_factory):
    """A model trained 20 steps, exported."""
    model_dir = tmp_path_factory.mktemp("trained") / "model"
    metrics = task.train_and_evaluate(
        _args(small_pipeline_output["output"], model_dir, "--train-steps", "20")
    )
    return {**small_pipeline_output, "model_dir": str(model_dir), "metrics": metrics}


def _model_variables(plan, use_tpu, monkeypatch):
    """Builds the training graph of the model_fn; returns variable names and optimizer types."""
    from trainer.model import create_model_fn

    made = []
    real = tf.compat.v1.tpu.CrossShardOptimizer

    class SpyCrossShardOptimizer(real):
        def __init__(self, opt, *a, **k):
            made.append(type(opt).__name__)
            super().__init__(opt, *a, **k)

        def compute_gradients(self, loss, var_list=None, **kwargs):
            # Outside a TPU there are no shards to average over; the wrapped optimizer's
            # gradients are what each shard would compute.
            return self._opt.compute_gradients(loss, var_list=var_list, **kwargs)

    monkeypatch.setattr(tf.compat.v1.tpu, "CrossShardOptimizer", SpyCrossShardOptimizer)
    graph = tf.Graph()
    with graph.as_default():
        features = {}
        for name in plan.features:
            features[name] = tf.sparse.from_dense(tf.constant([[1, 2], [3, 0]], tf.int64))
        for name in bias_features(plan):
            features[bias_feature(name)] = features[name]
        for name in plan.numeric_features:
            features[name] = tf.constant([0.5, -1.0])
        tf.compat.v1.train.create_global_step()
        create_model_fn(plan, use_tpu=use_tpu)(
            features, tf.constant([1.0, 0.0]), tf.estimator.ModeKeys.TRAIN, {}, None
        )
        names = sorted(
            v.op.name for v in graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
        )
    return names, made


def test_cross_shard_optimizer_and_same_variable_names(small_pipeline_output, monkeypatch):
    plan = small_pipeline_output["plan"]
    tpu_names, tpu_made = _model_variables(plan, True, monkeypatch)
    cpu_names, cpu_made = _model_variables(plan, False, monkeypatch)
    assert tpu_made == ["AdagradOptimizer"]
    assert cpu_made == []
    assert tpu_names == cpu_names
    assert any("items" in n for n in cpu_names)  # the shared table is named after the vocabulary
    assert "bias_item_id/item_id__bias_embedding/embedding_weights" in cpu_names


def test_resume_with_more_steps(trained, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(trained["model_dir"], model_dir)
    metrics = task.train_and_evaluate(
        _args(trained["output"], model_dir, "--train-steps", "30", "--no-export")
    )
    assert metrics["trained_from_step"] == 20
    assert metrics["steps_trained"] == 10
    assert metrics["global_step"] == 30


def _checkpoint_step(model_dir):
    checkpoint = tf.train.latest_checkpoint(str(model_dir))
    return int(checkpoint.rsplit("-", 1)[1]) if checkpoint else -1


def test_killed_run_resumes_from_its_last_checkpoint(small_pipeline_output, tmp_path):
    model_dir = tmp_path / "model"
    command = [
        sys.executable,
        "-m",
        "trainer.task",
        "--pipeline-output",
        small_pipeline_output["output"],
        "--model-dir",
        str(model_dir),
        "--batch-size",
        "64",
        "--train-steps",
        "1000000",
        "--save-checkpoints-steps",
        "10",
        "--no-export",
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        # Wait on the checkpoint state file, not on a checkpoint's files: the
        # saver writes model.ckpt-N.* first and names them in `checkpoint` after,
        # and a kill between the two leaves ckpt-N unnamed (resumed from N-1).
        deadline = time.time() + 180
        while time.time() < deadline and _checkpoint_step(model_dir) < 10:
            assert process.poll() is None, "training exited before its first checkpoint"
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    saved_step = _checkpoint_step(model_dir)
    assert saved_step >= 10, "no checkpoint past step 0 was written before the kill"
    metrics = task.train_and_evaluate(
        _args(
            small_pipeline_output["output"],
            model_dir,
            "--train-steps",
            str(saved_step + 5),
            "--no-export",
        )
    )
    assert metrics["trained_from_step"] == saved_step
    assert metrics["global_step"] == saved_step + 5


def _batches(input_fn, batch_size, count):
    dataset = input_fn({"batch_size": batch_size})
    return list(dataset.take(count))


def test_cpu_and_tpu_inputs_see_the_same_ids(small_pipeline_output):
    output, plan = small_pipeline_output["output"], small_pipeline_output["plan"]
    files = artifacts.data_files(output, "train")
    cpu = _batches(make_input_fn(files, plan, training=False), 64, 5)
    tpu = _batches(make_input_fn(files, plan, training=False, drop_remainder=True), 64, 5)
    length = plan.features["history"].max_sequence_length
    for (cpu_features, cpu_labels), (tpu_features, tpu_labels) in zip(cpu, tpu, strict=True):
        np.testing.assert_array_equal(cpu_labels, tpu_labels)
        for name in plan.features:
            np.testing.assert_array_equal(cpu_features[name].values, tpu_features[name].values)
            np.testing.assert_array_equal(cpu_features[name].indices, tpu_features[name].indices)
        per_row = np.bincount(cpu_features["history"].indices[:, 0], minlength=64)
        assert per_row.max() <= length
    # keep_last: the ids kept are the last ones of each transformed sequence.
    spec = tft.TFTransformOutput(output).transformed_feature_spec()
    raw = next(iter(tf.data.TFRecordDataset(files, compression_type="GZIP").batch(64)))
    full = tf.RaggedTensor.from_sparse(tf.io.parse_example(raw, spec)["history"]).to_list()
    kept = tf.RaggedTensor.from_sparse(cpu[0][0]["history"]).to_list()
    assert any(len(row) > length for row in full), "the sample has no sequence to truncate"
    assert kept == [row[-length:] for row in full]


def test_export_predicts_like_the_estimator(trained):
    output, plan = trained["output"], trained["plan"]
    with open(trained["data"]) as f:
        rows = [r for _, r in zip(range(40), csv.DictReader(f), strict=False)]
    rows.append(
        {
            "item_id": "unseen-item",
            "region": "unseen-region",
            "device": "tv",
            "history": "unseen-a i1 unseen-b",
            "price": "12.5",
        }
    )
    serialized = [raw_example(r) for r in rows]
    serve = tf.saved_model.load(trained["metrics"]["export_dir"]).signatures["serving_default"]
    served = serve(examples=tf.constant(serialized))["probabilities"].numpy()

    # The same rows through the transform graph, then the estimator's own predict().
    transform_output = tft.TFTransformOutput(output)
    raw_spec = transform_output.raw_feature_spec()
    raw_spec.pop("clicked")
    transformed = transform_output.transform_raw_features(
        tf.io.parse_example(tf.constant(serialized), raw_spec)
    )
    arrays = {
        name: (value.indices.numpy(), value.values.numpy(), value.dense_shape.numpy())
        if isinstance(value, tf.SparseTensor)
        else value.numpy()
        for name, value in transformed.items()
        if name != "clicked"
    }

    def input_fn(params):
        from trainer.inputs import prepare_features

        features = {
            name: tf.SparseTensor(*value) if isinstance(value, tuple) else tf.constant(value)
            for name, value in arrays.items()
        }
        # One batch of all rows; a dataset ends, so predict() stops after it.
        return tf.data.Dataset.from_tensors(prepare_features(features, plan, id_bias=True))

    estimator = build_estimator(
        _args(output, trained["model_dir"], "--train-steps", "20"),
        plan,
        read_pipeline_config(output),
    )
    predicted = np.array(
        [p["probabilities"] for p in estimator.predict(input_fn, yield_single_examples=True)]
    )
    np.testing.assert_allclose(served, predicted, rtol=1e-5, atol=1e-6)
    assert len(set(np.round(served, 5))) > 1


def test_serving_refuses_an_empty_id_the_pipeline_rejects(trained):
    with open(trained["data"]) as f:
        row = next(csv.DictReader(f))
    serve = tf.saved_model.load(trained["metrics"]["export_dir"]).signatures["serving_default"]
    refused = "feature .+item_id.+ holds an empty value"
    with pytest.raises(tf.errors.InvalidArgumentError, match=refused):
        serve(examples=tf.constant([raw_example(row), raw_example({**row, "item_id": ""})]))


@pytest.mark.parametrize("price", ["nan", "inf", "-inf"])
def test_serving_refuses_a_number_the_pipeline_rejects(trained, price):
    with open(trained["data"]) as f:
        row = next(csv.DictReader(f))
    serve = tf.saved_model.load(trained["metrics"]["export_dir"]).signatures["serving_default"]
    good = serve(examples=tf.constant([raw_example(row)]))["probabilities"].numpy()
    assert np.isfinite(good).all()
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature 'price' holds NaN"):
        serve(examples=tf.constant([raw_example(row), raw_example({**row, "price": price})]))


def test_refuses_an_unfinished_pipeline_output(small_pipeline_output, tmp_path):
    copy = tmp_path / "unfinished"
    shutil.copytree(small_pipeline_output["output"], copy)
    os.remove(copy / artifacts.SUCCESS)
    with pytest.raises(artifacts.PipelineOutputError, match="no _SUCCESS marker"):
        task.train_and_evaluate(_args(str(copy), tmp_path / "m", "--train-steps", "1"))
    assert not (tmp_path / "m").exists()


def test_refuses_a_plan_that_does_not_match_the_data(small_pipeline_output):
    output = small_pipeline_output["output"]
    spec = tft.TFTransformOutput(output).transformed_feature_spec()
    config = read_pipeline_config(output)
    plan = EmbeddingPlan.from_dict(small_pipeline_output["plan"].to_dict())
    plan.features["tags"] = plan.features["history"].__class__(
        name="tags", table="items", type="sequence", max_sequence_length=5
    )
    with pytest.raises(task.TrainerError, match="the plan uses 'tags'"):
        checks.check_inputs(config, plan, spec)
    plan = EmbeddingPlan.from_dict(small_pipeline_output["plan"].to_dict())
    plan.label["type"] = "multiclass"
    with pytest.raises(task.TrainerError, match="label type 'multiclass' cannot be trained"):
        checks.check_inputs(config, plan, spec)
    checks.check_inputs(config, small_pipeline_output["plan"], spec)


def test_flag_errors():
    base = ["--pipeline-output", "o", "--model-dir", "m", "--train-steps", "5"]
    with pytest.raises(SystemExit):
        task.parse_args([*base, "--use-tpu"])
    # A TPU evaluates on its host CPU, over the whole eval split: no --eval-steps needed.
    assert task.parse_args([*base, "--use-tpu", "--tpu", "t"]).eval_steps is None
    with pytest.raises(SystemExit):
        task.parse_args([*base, "--hidden-units", "64,x"])
    assert task.parse_args([*base, "--hidden-units", "32,16"]).hidden_units == [32, 16]


def _edit_json(path, edit):
    import json

    with open(path) as f:
        value = json.load(f)
    edit(value)
    with open(path, "w") as f:
        json.dump(value, f)


def test_a_checkpoint_of_another_model_is_refused_before_anything_is_written(trained, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(trained["model_dir"], model_dir)

    def bigger_items(plan):  # a valid plan of another model: a bigger vocabulary
        plan["tables"]["items"]["vocabulary_size"] = 50_000
        plan["tables"]["items"]["entries"] = 50_000 - plan["tables"]["items"]["num_oov_buckets"]

    _edit_json(model_dir / artifacts.PLAN, bigger_items)  # as if trained on another output
    config_before = (model_dir / "training_config.json").read_bytes()
    with pytest.raises(task.TrainerError, match=r"another model .*tables: .*50000") as refused:
        task.train_and_evaluate(_args(trained["output"], model_dir, "--train-steps", "40"))
    assert "new --model-dir" in str(refused.value)
    with pytest.raises(task.TrainerError, match=r"--hidden-units: \[128, 64\] then, \[32\] now"):
        task.train_and_evaluate(
            _args(
                trained["output"],
                trained["model_dir"],
                "--train-steps",
                "40",
                "--hidden-units",
                "32",
            )
        )
    assert (model_dir / "training_config.json").read_bytes() == config_before
    assert tf.train.latest_checkpoint(trained["model_dir"]).endswith("-20")


def test_a_plan_that_does_not_match_its_vocabulary_is_refused(small_pipeline_output, tmp_path):
    output = tmp_path / "output"
    shutil.copytree(small_pipeline_output["output"], output)

    def hand_edited(plan):
        plan["tables"]["items"]["vocabulary_size"] = 50_000

    _edit_json(output / artifacts.PLAN, hand_edited)
    with pytest.raises(artifacts.PipelineOutputError, match=r"items.vocabulary_size is 50000"):
        task.train_and_evaluate(_args(str(output), tmp_path / "m", "--train-steps", "1"))
    assert not (tmp_path / "m").exists()

    def consistently_edited(plan):  # valid in itself, but not the vocabulary's size
        plan["tables"]["items"]["entries"] = 49_999

    _edit_json(output / artifacts.PLAN, consistently_edited)
    with pytest.raises(task.TrainerError, match=r"entries is 49999, but its vocabulary file"):
        task.train_and_evaluate(_args(str(output), tmp_path / "m", "--train-steps", "1"))
    assert not (tmp_path / "m").exists()
    # A vocabulary file gone from the transform graph: the commit manifest misses it.
    shutil.rmtree(output)
    shutil.copytree(small_pipeline_output["output"], output)
    os.remove(output / "transform_fn" / "assets" / "items")
    with pytest.raises(artifacts.PipelineOutputError, match="transform_fn/assets/items"):
        task.train_and_evaluate(_args(str(output), tmp_path / "m", "--train-steps", "1"))
    assert not (tmp_path / "m").exists()


def test_an_empty_eval_split_reports_no_invented_metrics(tmp_path):
    import json

    from examples.clicks.generate import generate, write_csv
    from tests.conftest import example_config_text, run_pipeline

    config = tmp_path / "features.toml"
    text = example_config_text(validation=False)
    assert "eval_fraction = 0.1" in text
    config.write_text(text.replace("eval_fraction = 0.1", "eval_fraction = 0.0"))
    data = tmp_path / "clicks.csv"
    write_csv(str(data), generate(300, seed=5))
    output = str(tmp_path / "out")
    stats = run_pipeline(["--config", str(config), "--input", str(data), "--output", output])
    assert stats["rows"]["eval"] == 0
    metrics = task.train_and_evaluate(
        _args(output, tmp_path / "model", "--train-steps", "3", "--no-export")
    )
    written = json.loads((tmp_path / "model" / "eval_metrics.json").read_text())
    best = written.pop("best")
    assert written == {"examples": 0, "global_step": 3}
    assert best["selected_on"] is None
    assert "auc" not in metrics and "loss" not in metrics


@pytest.mark.parametrize("splits_with_rows", [("train",), ("train", "validation")])
def test_empty_validation_or_eval_splits_select_and_report_nothing_invented(
    splits_with_rows, tmp_path
):
    """The pipeline writes an empty split as one empty file: selection on an empty
    validation split, or eval figures of an empty eval split, would be made-up zeros."""
    import json

    from examples.clicks.generate import generate, write_csv
    from pipeline.decode import split_of
    from tests.conftest import example_config_text, run_pipeline

    config = tmp_path / "features.toml"
    text = example_config_text()
    assert "eval_fraction = 0.1" in text and "validation_fraction = 0.1" in text
    config.write_text(text)
    rows = [r for r in generate(600, seed=5) if split_of(r[0], 0.1, 0.1) in splits_with_rows]
    data = tmp_path / "clicks.csv"
    write_csv(str(data), rows)
    output = str(tmp_path / "out")
    stats = run_pipeline(["--config", str(config), "--input", str(data), "--output", output])
    assert stats["rows"]["eval"] == 0
    assert (stats["rows"]["validation"] > 0) == ("validation" in splits_with_rows)
    model_dir = tmp_path / "model"
    task.train_and_evaluate(
        _args(output, model_dir, "--train-steps", "4", "--eval-every-steps", "2")
    )
    written = json.loads((model_dir / "eval_metrics.json").read_text())
    best = written.pop("best")
    assert written["examples"] == 0 and "auc" not in written
    if "validation" in splits_with_rows:
        history = json.loads((model_dir / "eval_metrics.json").read_text())["history"]
        # The start (step 0) and the two evaluation points.
        assert [h["global_step"] for h in history] == [0, 2, 4]
        assert {h["split"] for h in history} == {"validation"}
        assert all(h["examples"] == stats["rows"]["validation"] for h in history)
        assert best["selected_on"] == "validation"
        assert best["eval"] == {"examples": 0}
        # The top-level step is the exported (chosen) checkpoint's, with no eval figure.
        assert written["global_step"] == best["step"]
    else:
        assert "history" not in json.loads((model_dir / "eval_metrics.json").read_text())
        assert best["selected_on"] is None and "no validation rows" in best["reason"]
        assert not (model_dir / "best").exists() and not (model_dir / "export_best").exists()


def test_a_checkpoint_trained_on_other_vocabularies_is_refused(trained, tmp_path):
    # Same table shapes, other id -> row mapping: resuming would train the rows of one run's
    # values as if they were another's.
    model_dir = tmp_path / "model"
    shutil.copytree(trained["model_dir"], model_dir)

    def other_vocabulary(config):
        config["vocabulary_fingerprints"]["items"] = "0" * 64
        config["pipeline_run_id"] = "20260101T000000Z-00000000"

    _edit_json(model_dir / "training_config.json", other_vocabulary)
    with pytest.raises(
        task.TrainerError, match=r"vocabulary 'items' holds other values .*20260101T000000Z"
    ):
        task.train_and_evaluate(_args(trained["output"], model_dir, "--train-steps", "40"))


def test_nothing_is_exported_when_the_pipeline_output_is_recommitted_meanwhile(
    small_pipeline_output, tmp_path, monkeypatch
):
    # A rerun of the pipeline that commits while the trainer runs: the export would pair the
    # tables with the new run's vocabularies.
    output = tmp_path / "output"
    shutil.copytree(small_pipeline_output["output"], output)
    real_export = tf.compat.v1.estimator.tpu.TPUEstimator.export_saved_model

    def recommit_during_export(self, *args, **kwargs):
        path = real_export(self, *args, **kwargs)
        _edit_json(output / artifacts.SUCCESS, lambda m: m.update(run_id="another-run"))
        return path

    monkeypatch.setattr(
        tf.compat.v1.estimator.tpu.TPUEstimator, "export_saved_model", recommit_during_export
    )
    with pytest.raises(checks.TrainerError, match=r"recommitted while training .*another-run"):
        task.train_and_evaluate(_args(str(output), tmp_path / "m", "--train-steps", "2"))
    assert not glob.glob(str(tmp_path / "m" / "export" / "*"))


def _with_validation_split(source: str, target, monkeypatch) -> str:
    """A copy of a pipeline output whose manifest and stats also list a validation split (a
    copy of the eval shards), as the pipeline writes one with `[split] validation_fraction`."""
    import json

    shutil.copytree(source, target)
    manifest = json.loads((target / artifacts.SUCCESS).read_text())
    manifest["data"]["validation"] = []
    for shard in manifest["data"]["eval"]:
        copy = shard.replace("data/eval-", "data/validation-")
        shutil.copy(target / shard, target / copy)
        manifest["files"][copy] = manifest["files"][shard]
        manifest["crc32c"][copy] = manifest["crc32c"][shard]
        manifest["data"]["validation"].append(copy)
    stats_path = target / artifacts.STATS
    stats = json.loads(stats_path.read_text())
    stats["rows"]["validation"] = stats["rows"]["eval"]
    stats_path.write_text(json.dumps(stats))
    manifest["files"][artifacts.STATS] = stats_path.stat().st_size
    manifest["crc32c"][artifacts.STATS] = storage.crc32c(str(stats_path))
    (target / artifacts.SUCCESS).write_text(json.dumps(manifest))
    if "validation" not in artifacts.SPLITS:
        monkeypatch.setattr(artifacts, "SPLITS", (*artifacts.SPLITS, "validation"))
    return str(target)


def _chosen(history, best):
    """The evaluation the selection must keep: the best validation AUC among the start (step
    0) and the checkpoints that beat the start's by more than its standard error."""
    from trainer.metrics import auc_standard_error

    start = next(h for h in history if h["global_step"] == 0)
    margin = auc_standard_error(start["auc"], start["positives"], start["negatives"])
    assert best["start_validation_auc"] == start["auc"]
    assert best["validation_auc_needed"] == pytest.approx(start["auc"] + margin)
    candidates = [h for h in history if h is start or h["auc"] > start["auc"] + margin]
    return max(candidates, key=lambda h: h["auc"])


def test_periodic_evaluation_selects_and_exports_the_best_checkpoint_on_validation(
    small_pipeline_output, tmp_path, monkeypatch
):
    import json

    output = _with_validation_split(small_pipeline_output["output"], tmp_path / "out", monkeypatch)
    model_dir = tmp_path / "model"
    metrics = task.train_and_evaluate(
        _args(output, model_dir, "--train-steps", "30", "--eval-every-steps", "10")
    )
    written = json.loads((model_dir / "eval_metrics.json").read_text())
    history = written["history"]
    # The starting point (step 0: where counting ends) is a candidate too.
    assert [h["global_step"] for h in history] == [0, 10, 20, 30]
    assert {h["split"] for h in history} == {"validation"}
    best = written["best"]
    assert best["selected_on"] == "validation"
    # The best step: the start, unless a checkpoint beats it by one standard error.
    top = _chosen(history, best)
    assert best["step"] == top["global_step"]
    assert best["validation_auc"] == pytest.approx(top["auc"])
    # Its eval figures are those of its own checkpoint, which was kept and exported.
    # Recorded relative to MODEL_DIR, so that the directory can be copied or moved.
    assert best["checkpoint"] == f"best/model.ckpt-{best['step']}"
    reader = tf.train.load_checkpoint(str(model_dir / best["checkpoint"]))
    assert reader.get_tensor("global_step") == best["step"]
    assert best["eval"]["global_step"] == best["step"]
    # The chosen checkpoint is the exported model, and the top level holds its figures on
    # eval; the last checkpoint's stand under `last` when it was not the one chosen.
    assert os.path.isdir(best["export_dir"]) and best["export_dir"] == metrics["export_dir"]
    assert not (model_dir / "export_best").exists()
    assert written["global_step"] == best["step"] and written["examples"] > 0
    assert written["auc"] == best["eval"]["auc"]
    if best["step"] != 30:
        assert written["last"]["global_step"] == 30
    else:
        assert "last" not in written
    # The verdict: the chosen model against the best baseline, both on validation.
    assert written["verdict"]["judged_on"] == "validation"
    assert written["verdict"]["auc"] == pytest.approx(best["validation_auc"])
    assert written["beats_baseline"] == (
        written["verdict"]["auc"]
        >= written["verdict"]["best_baseline_auc"] - written["verdict"]["tolerance"]
    )
    assert written["best_baseline"] in ("item_id", "region", "device")
    assert written["best_baseline_auc"] == written[f"baseline_auc_{written['best_baseline']}"]
    # TensorBoard: train summaries in MODEL_DIR, validation and eval curves beside them.
    for directory in ("", "eval_validation", "eval"):
        assert glob.glob(str(model_dir / directory / "events.out.tfevents.*")), directory


def test_a_resumed_run_keeps_the_history_and_the_best_checkpoint_so_far(
    small_pipeline_output, tmp_path, monkeypatch
):
    import json

    output = _with_validation_split(small_pipeline_output["output"], tmp_path / "out", monkeypatch)
    model_dir = tmp_path / "model"
    task.train_and_evaluate(
        _args(output, model_dir, "--train-steps", "20", "--eval-every-steps", "10", "--no-export")
    )
    first = json.loads((model_dir / "eval_metrics.json").read_text())
    task.train_and_evaluate(
        _args(output, model_dir, "--train-steps", "30", "--eval-every-steps", "10", "--no-export")
    )
    written = json.loads((model_dir / "eval_metrics.json").read_text())
    assert [h["global_step"] for h in written["history"]] == [0, 10, 20, 30]
    top = _chosen(written["history"], written["best"])
    assert written["best"]["step"] == top["global_step"]
    if first["best"]["step"] == top["global_step"]:  # the earlier best still wins
        assert written["best"]["checkpoint"] == first["best"]["checkpoint"]
    # A run stopped before its end never writes eval_metrics.json: the rerun still has every
    # evaluation it made (selection.json) and so chooses among the same checkpoints.
    (model_dir / "eval_metrics.json").unlink()
    # A rerun with nothing left to train evaluates step 30 again: the same figures, once.
    task.train_and_evaluate(
        _args(output, model_dir, "--train-steps", "30", "--eval-every-steps", "10", "--no-export")
    )
    again = json.loads((model_dir / "eval_metrics.json").read_text())
    assert again["history"] == written["history"] and again["best"] == written["best"]


def test_without_a_validation_split_nothing_is_selected(trained):
    best = trained["metrics"]["best"]
    assert best["selected_on"] is None and "validation" in best["reason"]
    # eval_metrics.json still says which export holds the model it describes.
    written = json.loads(open(os.path.join(trained["model_dir"], "eval_metrics.json")).read())
    assert written["best"]["export_dir"] == trained["metrics"]["export_dir"]
    assert not os.path.exists(os.path.join(trained["model_dir"], "export_best"))


def _oov_row(model_dir: str, plan) -> np.ndarray:
    reader = tf.train.load_checkpoint(model_dir)
    # The shared table's variable is named after its vocabulary.
    return reader.get_tensor("items")[plan.tables["items"].entries]


def test_training_trains_the_oov_row(small_pipeline_output, tmp_path):
    """With frequency_threshold 1 every training item has its own row: only the OOV share
    of training (--oov-train-share) ever updates the OOV row that unseen items read."""
    output, plan = small_pipeline_output["output"], small_pipeline_output["plan"]
    assert plan.tables["items"].num_oov_buckets == 1
    rows = {}
    for share in ("0", "0.2"):
        model_dir = tmp_path / share
        for steps in ("10", "30"):
            task.train_and_evaluate(
                _args(
                    output,
                    model_dir,
                    "--train-steps",
                    steps,
                    "--no-export",
                    "--oov-train-share",
                    share,
                )  # fmt: skip
            )
            rows[share, steps] = _oov_row(str(model_dir), plan)
    np.testing.assert_array_equal(rows["0", "10"], rows["0", "30"])
    assert np.abs(rows["0.2", "30"] - rows["0.2", "10"]).max() > 1e-4


def test_a_damaged_shard_is_one_line_naming_the_output(small_pipeline_output, tmp_path, caplog):
    import logging

    output = tmp_path / "output"
    shutil.copytree(small_pipeline_output["output"], output)
    (shard,) = glob.glob(str(output / "data" / "train-*"))
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2] ^= 0xFF  # same size: the manifest's check passes
    open(shard, "wb").write(bytes(data))
    argv = ["--pipeline-output", str(output), "--model-dir", str(tmp_path / "m")]
    with caplog.at_level(logging.ERROR, logger="trainer"):
        assert task.main([*argv, "--train-steps", "2", "--batch-size", "64"]) == 2
    # The shard itself is named: its content is not the one the commit manifest records.
    assert f"{shard}: the data shard is damaged" in caplog.text
    assert f"--output {output} --overwrite" in caplog.text
    assert len(caplog.records) == 1


def _strict_json(path) -> dict:
    """Parses JSON as strict parsers do: NaN and infinities are not JSON."""
    import json

    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_split_of_one_class_has_no_auc_and_selects_nothing(tmp_path, caplog):
    """Eval and validation rows all negative (training mixed): TensorFlow's AUC says 1.0
    and selection used to rank checkpoints by it; no AUC is defined for such rows."""
    import logging

    from examples.clicks.generate import generate, write_csv
    from pipeline.decode import split_of
    from tests.conftest import example_config_text, run_pipeline

    config = tmp_path / "features.toml"
    text = example_config_text()
    assert "eval_fraction = 0.1" in text and "validation_fraction = 0.1" in text
    config.write_text(text)
    rows = [
        r if split_of(r[0], 0.1, 0.1) == "train" else (*r[:-1], 0) for r in generate(900, seed=5)
    ]
    data = tmp_path / "clicks.csv"
    write_csv(str(data), rows)
    output = str(tmp_path / "out")
    stats = run_pipeline(["--config", str(config), "--input", str(data), "--output", output])
    assert stats["rows"]["eval"] > 0 and stats["rows"]["validation"] > 0
    model_dir = tmp_path / "model"
    with caplog.at_level(logging.INFO, "trainer"):
        task.train_and_evaluate(
            _args(output, model_dir, "--train-steps", "6", "--eval-every-steps", "2")
        )
    written = _strict_json(model_dir / "eval_metrics.json")
    assert written["auc"] is None and "both classes" in written["undefined"]["auc"]
    assert (written["positives"], written["negatives"]) == (0, stats["rows"]["eval"])
    assert written["best_baseline_auc"] is None and written["best_baseline"] is None
    assert all(v is None for k, v in written.items() if k.startswith("auc_unseen_"))
    assert all(h["auc"] is None for h in written["history"])
    best = written["best"]
    assert "checkpoint" not in best and "undefined" in best["reason"]
    assert not (model_dir / "best").exists() and not (model_dir / "export_best").exists()
    # TensorBoard gets no invented AUC either: NaN where the figure is not defined.
    logged = [
        v.simple_value
        for path in glob.glob(str(model_dir / "eval*" / "events.out.tfevents.*"))
        for event in tf.compat.v1.train.summary_iterator(path)
        for v in event.summary.value
        if v.tag.startswith("auc")
    ]
    assert logged and all(np.isnan(v) for v in logged)
    lines = [r.getMessage() for r in caplog.records]
    assert f"eval split: {stats['rows']['eval']:,} rows, 0 positive" in "\n".join(lines)
    assert not any("auc 1.0" in line.lower() for line in lines)


def test_a_copied_model_dir_uses_its_own_best_checkpoint(
    small_pipeline_output, tmp_path, monkeypatch
):
    output = _with_validation_split(small_pipeline_output["output"], tmp_path / "out", monkeypatch)
    model_dir = tmp_path / "model"
    task.train_and_evaluate(
        _args(output, model_dir, "--train-steps", "20", "--eval-every-steps", "10", "--no-export")
    )
    best = _strict_json(model_dir / "eval_metrics.json")["best"]
    assert best["checkpoint"].startswith("best/")
    moved = tmp_path / "moved"
    shutil.move(str(model_dir), moved)
    metrics = task.train_and_evaluate(
        _args(output, moved, "--train-steps", "30", "--eval-every-steps", "10", "--no-export")
    )
    assert str(model_dir) not in json.dumps(metrics)
    reader = tf.train.load_checkpoint(str(moved / metrics["best"]["checkpoint"]))
    assert reader.get_tensor("global_step") == metrics["best"]["step"]


def test_fewer_steps_than_the_checkpoint_is_refused_before_anything_is_written(trained, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(trained["model_dir"], model_dir)
    before = {p: p.stat().st_mtime_ns for p in model_dir.rglob("*")}
    with pytest.raises(task.TrainerError, match="checkpoint at step 20, past --train-steps 10"):
        task.train_and_evaluate(_args(trained["output"], model_dir, "--train-steps", "10"))
    assert {p: p.stat().st_mtime_ns for p in model_dir.rglob("*")} == before


def test_a_damaged_checkpoint_is_named_as_a_checkpoint(trained, tmp_path, caplog):
    model_dir = tmp_path / "model"
    shutil.copytree(trained["model_dir"], model_dir)
    latest = tf.train.latest_checkpoint(str(model_dir))
    (data,) = glob.glob(latest + ".data-*")
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    argv = ["--pipeline-output", trained["output"], "--model-dir", str(model_dir)]
    assert task.main([*argv, "--train-steps", "40", "--batch-size", "64"]) == 2
    message = caplog.records[-1].getMessage()
    assert "checkpoint" in message and "rerun the pipeline" not in message
    assert str(model_dir) in message


def test_two_trainers_on_one_model_dir(trained, tmp_path):
    from trainer import lock

    model_dir = tmp_path / "model"
    shutil.copytree(trained["model_dir"], model_dir)
    with lock.hold(str(model_dir)):  # another trainer holds it
        with pytest.raises(task.TrainerError, match="in use by another trainer"):
            task.train_and_evaluate(_args(trained["output"], model_dir, "--train-steps", "30"))
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("-20")


def test_the_same_seed_trains_the_same_model(small_pipeline_output, tmp_path):
    output = small_pipeline_output["output"]
    values = []
    for run in ("a", "b"):
        metrics = task.train_and_evaluate(
            _args(output, tmp_path / run, "--train-steps", "30", "--no-export", "--seed", "7")
        )
        reader = tf.train.load_checkpoint(str(tmp_path / run))
        values.append(
            (metrics["auc"], reader.get_tensor("items"), reader.get_tensor("logits/kernel"))
        )
    assert values[0][0] == values[1][0]
    # Op determinism is process-wide: the run turned it on for itself and off again.
    from tensorflow.python.framework import config as tf_config

    assert not tf_config.is_op_determinism_enabled()
    np.testing.assert_array_equal(values[0][1], values[1][1])
    np.testing.assert_array_equal(values[0][2], values[1][2])


def test_a_failed_command_ends_with_our_line_on_stderr(trained, tmp_path):
    """After TensorFlow is loaded, its exit used to print a dozen `Exception ignored in:
    AtomicFunction.__del__` tracebacks after the product's line."""
    model_dir = tmp_path / "model"
    shutil.copytree(trained["model_dir"], model_dir)
    done = subprocess.run(
        [sys.executable, "-m", "trainer.task", "--pipeline-output", trained["output"]]
        + ["--model-dir", str(model_dir), "--train-steps", "5"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 2
    assert "Exception ignored" not in done.stderr
    assert "past --train-steps 5" in done.stderr.strip().splitlines()[-1]


def test_a_model_chosen_on_validation_is_not_below_the_best_baseline(
    small_pipeline_output, tmp_path, monkeypatch
):
    """On small data, the default periodic evaluation chooses a checkpoint whose validation
    AUC is at least the best single-feature baseline's, less the noise of a few hundred
    rows, and says so in the verdict."""
    import json

    output = _with_validation_split(small_pipeline_output["output"], tmp_path / "out", monkeypatch)
    model_dir = tmp_path / "model"
    task.train_and_evaluate(_args(output, model_dir, "--train-epochs", "4", "--no-export"))
    written = json.loads((model_dir / "eval_metrics.json").read_text())
    config = json.loads((model_dir / "training_config.json").read_text())
    stats = artifacts.read_json(output, artifacts.STATS)
    # Four passes over the train rows at batch 64, and five evaluations over them after the
    # start's.
    assert config["train_steps"] == -(-4 * stats["rows"]["train"] // 64)
    assert len(written["history"]) == 6 and written["history"][0]["global_step"] == 0
    judged = written["verdict"]
    assert judged["judged_on"] == "validation"
    rows = stats["rows"]["validation"]
    noise = 2 * 0.5 / rows**0.5  # two standard errors of an AUC near 0.5 on these rows
    assert judged["auc"] >= judged["best_baseline_auc"] - noise, judged


def test_the_model_starts_where_the_chosen_start_says(tmp_path):
    """On a ratings log split by user (the key a feature: a per-user term), the run records
    how its start was chosen (`linear_start`), and the checkpoint at step 0 holds exactly that
    start: the bias tables of the item and the user, and the output layer's bias."""
    from embedding.planner import plan_pipeline_output
    from examples.clicks.generate import generate_ratings, write_csv
    from tests.conftest import run_pipeline
    from trainer.prepare import prepare
    from trainer.start import measure_and_start

    data = tmp_path / "ratings.csv"
    write_csv(str(data), generate_ratings(rows=12000, seed=3, items=300, users=400))
    output = str(tmp_path / "out")
    config = str(ROOT / "examples" / "clicks" / "ratings.toml")
    run_pipeline(["--config", config, "--input", str(data), "--output", output])
    plan_pipeline_output(output)
    model_dir = tmp_path / "model"
    args = _args(output, model_dir, "--train-steps", "20", "--eval-every-steps", "10")
    task.train_and_evaluate(args)
    written = json.loads((model_dir / "eval_metrics.json").read_text())
    start = written["linear_start"]
    # On these rows the user's generosity biases the counts enough for validation to tell.
    assert start["chosen"] is True and start["z"] > start["z_needed"]
    assert set(start["l2"]) == {"user_id", "item_id"}
    assert 0 < start["validation_auc"] < 1 and 0 < start["counting_validation_auc"] < 1
    validation = next(h for h in written["history"] if h["global_step"] == 0)
    assert validation["split"] == "validation"
    # The start's validation AUC is the one its choice measured, within the streaming AUC.
    chosen_auc = start["validation_auc" if start["chosen"] else "counting_validation_auc"]
    assert validation["auc"] == pytest.approx(chosen_auc, abs=1e-3)

    run = prepare(args)
    _, _, (values, logit) = measure_and_start(run, args.id_bias_scale)
    reader = tf.train.load_checkpoint(str(model_dir / "model.ckpt-0"))
    stored = {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if name.endswith("__bias_embedding/embedding_weights")
    }
    for table, rows in values.items():
        # A table's bias is named after the table, or after its one categorical feature.
        names = (table, *run.plan.tables[table].features)
        (name,) = [n for n in stored if any(f"/{x}__bias_embedding" in n for x in names)]
        np.testing.assert_allclose(stored[name][:, 0], rows, rtol=1e-6, atol=1e-7)
    assert set(values) == {"user_id", "items"}
    assert reader.get_tensor("logits/bias")[0] == pytest.approx(logit, rel=1e-6)


def test_the_start_is_a_candidate_whatever_the_checkpoint_rotation_and_a_lost_history(
    small_pipeline_output, tmp_path, monkeypatch
):
    """More than five checkpoints before the first evaluation: rotation deletes
    model.ckpt-0, but the start was kept aside when it was saved (MODEL_DIR/start/). A
    resumed run whose history was lost (neither selection.json nor eval_metrics.json, as in
    a model directory copied without them) still compares with the start."""
    output = _with_validation_split(small_pipeline_output["output"], tmp_path / "out", monkeypatch)
    model_dir = tmp_path / "model"
    flags = ("--save-checkpoints-steps", "2", "--eval-every-steps", "20", "--no-export")
    args = task.parse_args(
        ["--pipeline-output", output, "--model-dir", str(model_dir), "--batch-size", "64",
         "--train-steps", "20", *flags]
    )  # fmt: skip
    task.train_and_evaluate(args)
    assert not (model_dir / "model.ckpt-0.index").exists()  # rotated away
    assert (model_dir / "start" / "model.ckpt-0.index").exists()
    written = json.loads((model_dir / "eval_metrics.json").read_text())
    assert [h["global_step"] for h in written["history"]] == [0, 20]
    assert "validation_auc_needed" in written["best"]
    assert written["best"]["step"] == _chosen(written["history"], written["best"])["global_step"]
    # The history lost: the resumed run evaluates the start again. (A run killed before
    # its end keeps it in selection.json: test_a_resumed_run_keeps_the_history_...)
    (model_dir / "eval_metrics.json").unlink()
    (model_dir / "selection.json").unlink()
    args.train_steps = 40
    task.train_and_evaluate(args)
    written = json.loads((model_dir / "eval_metrics.json").read_text())
    # Step 20, the evaluation point the run resumes from, is a candidate again too.
    assert [h["global_step"] for h in written["history"]] == [0, 20, 40]
    assert written["best"]["step"] == _chosen(written["history"], written["best"])["global_step"]


def test_a_swallowed_stop_ends_training_after_its_step(monkeypatch):
    """A Ctrl-C or SIGTERM whose KeyboardInterrupt a finalizer swallowed is still a stop:
    the progress hook ends the training loop after the step in which it came."""
    from common import process
    from trainer.progress import TrainingProgress

    monkeypatch.setattr(process, "_stop", [])

    steps = []

    class SignalAtStep(tf.compat.v1.train.SessionRunHook):
        def before_run(self, run_context):
            return tf.compat.v1.train.SessionRunArgs(step)

        def after_run(self, run_context, run_values):
            steps.append(run_values.results)
            if len(steps) == 3:
                process._stop.append(signal.SIGTERM)  # what the handler records

    with tf.Graph().as_default():
        step = tf.compat.v1.train.create_global_step()
        increment = tf.compat.v1.assign_add(step, 1)
        hooks = [
            SignalAtStep(),
            TrainingProgress(10, 1),
            tf.compat.v1.train.StopAtStepHook(last_step=10),
        ]
        with pytest.raises(KeyboardInterrupt):
            with tf.compat.v1.train.MonitoredSession(hooks=hooks) as session:
                while not session.should_stop():
                    session.run(increment)
    assert len(steps) == 3  # stopped after the step the stop came in
    assert process._stop == [signal.SIGTERM]


def test_an_export_stopped_midway_leaves_nothing_behind(trained, tmp_path, monkeypatch):
    """A stop during the export leaves no `export/temp-*` folder (TensorFlow writes there,
    then renames), and one an earlier stopped run left is removed by the next export."""
    model_dir = tmp_path / "model"
    shutil.copytree(trained["model_dir"], model_dir)
    left = model_dir / "export" / "temp-1796603619"
    (left / "variables").mkdir(parents=True)
    (left / "saved_model.pb").write_bytes(b"half")
    estimator = tf.compat.v1.estimator.tpu.TPUEstimator

    def stopped(self, base, *args, **kwargs):
        (Path(base) / "temp-1796609999").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(estimator, "export_saved_model", stopped)
    before = sorted(p.name for p in (model_dir / "export").iterdir())
    with pytest.raises(KeyboardInterrupt):
        task.train_and_evaluate(_args(trained["output"], model_dir, "--train-steps", "20"))
    after = sorted(p.name for p in (model_dir / "export").iterdir())
    assert after == [name for name in before if not name.startswith("temp-")]
    monkeypatch.undo()
    (left / "variables").mkdir(parents=True)
    metrics = task.train_and_evaluate(_args(trained["output"], model_dir, "--train-steps", "20"))
    assert not list((model_dir / "export").glob("temp-*"))
    assert os.path.isdir(metrics["export_dir"])


def test_the_eval_loss_is_the_mean_over_rows_whatever_the_batches(trained):
    # The estimator's own loss is the mean of each batch's mean: a batch of one row weighs
    # as much as a full one. The reported loss is the mean over the rows.
    from common import artifacts
    from trainer.inputs import make_input_fn
    from trainer.selection import jsonable

    output, plan = trained["output"], trained["plan"]
    files = artifacts.data_files(output, "eval")
    rows = trained["stats"]["rows"]["eval"]
    labels = np.array(
        [
            tf.train.Example.FromString(r.numpy()).features.feature["clicked"].float_list.value[0]
            for r in tf.data.TFRecordDataset(files, compression_type="GZIP")
        ]
    )
    assert len(labels) == rows > 3
    # Two batches: all rows but one, then one row.
    args = _args(output, trained["model_dir"], "--train-steps", "20")
    args.batch_size = rows - 1
    estimator = build_estimator(args, plan, read_pipeline_config(output))
    input_fn = make_input_fn(files, plan, training=False, id_bias=True)
    figures = jsonable(estimator.evaluate(input_fn), plan)
    p = np.array([x["probabilities"] for x in estimator.predict(input_fn)], np.float64).ravel()
    assert len(p) == rows
    exact = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    assert figures["examples"] == rows
    assert figures["loss"] == pytest.approx(exact, rel=1e-4)


def test_a_run_stopped_between_evaluation_points_resumes_to_the_same_model(
    small_pipeline_output, tmp_path, monkeypatch
):
    # Checkpoints every 10 steps, evaluations every 20: a stop after the checkpoint of step
    # 30 resumes inside the segment that began at step 20, whose data order is seed + 20.
    from trainer import selection

    output = small_pipeline_output["output"]
    flags = ["--train-steps", "60", "--eval-every-steps", "20", "--no-export", "--seed", "5"]
    task.train_and_evaluate(_args(output, tmp_path / "whole", *flags))

    real = selection.keep_start

    def stop_after_step_30(model_dir):
        listener = real(model_dir)
        kept = listener.after_save

        def after_save(session, step):
            kept(session, step)
            if step == 30:
                raise KeyboardInterrupt

        listener.after_save = after_save
        return listener

    monkeypatch.setattr(task, "keep_start", stop_after_step_30)
    with pytest.raises(KeyboardInterrupt):
        task.train_and_evaluate(_args(output, tmp_path / "stopped", *flags))
    assert tf.train.latest_checkpoint(str(tmp_path / "stopped")).endswith("model.ckpt-30")
    monkeypatch.setattr(task, "keep_start", real)
    task.train_and_evaluate(_args(output, tmp_path / "stopped", *flags))
    whole = tf.train.load_checkpoint(str(tmp_path / "whole"))
    resumed = tf.train.load_checkpoint(str(tmp_path / "stopped"))
    names = sorted(whole.get_variable_to_shape_map())
    assert sorted(resumed.get_variable_to_shape_map()) == names
    assert resumed.get_tensor("global_step") == 60
    for name in names:
        np.testing.assert_array_equal(resumed.get_tensor(name), whole.get_tensor(name), name)


def test_a_rerun_with_nothing_to_train_keeps_the_flags_the_model_was_trained_with(
    trained, tmp_path
):
    model_dir = tmp_path / "model"
    shutil.copytree(trained["model_dir"], model_dir)
    before = (model_dir / "training_config.json").read_bytes()
    extra = ("--train-steps", "20", "--learning-rate", "0.5", "--seed", "9", "--no-export")
    metrics = task.train_and_evaluate(_args(trained["output"], model_dir, *extra))
    assert metrics["steps_trained"] == 0
    assert (model_dir / "training_config.json").read_bytes() == before
