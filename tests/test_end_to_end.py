"""The whole chain on 2,000 generated rows: pipeline, plan, 20 training steps, export, serve.

One real Beam pipeline, one real TPUEstimator (on CPU), one real SavedModel; the module-scoped
fixture runs them once and the tests check what each stage wrote.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from common import artifacts
from tests.conftest import SMALL_ROWS, raw_example
from trainer import task

pytestmark = [pytest.mark.slow, pytest.mark.trainer_env]


@pytest.fixture(scope="module")
def chain(small_pipeline_output, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("chain") / "model")
    metrics = task.train_and_evaluate(
        task.parse_args(
            [
                "--pipeline-output",
                small_pipeline_output["output"],
                "--model-dir",
                model_dir,
                "--train-steps",
                "20",
                "--batch-size",
                "64",
            ]
        )
    )
    return {**small_pipeline_output, "model_dir": model_dir, "metrics": metrics}


def test_pipeline_writes_every_artifact(chain):
    output = chain["output"]
    for name in (
        "report.html",
        "transform_fn",
        "transformed_metadata",
        "stats.json",
        "config.json",
        "_SUCCESS",
        "rejected",
    ):
        assert os.path.exists(os.path.join(output, name)), name
    assert glob.glob(os.path.join(output, "data", "train-*.tfrecord.gz"))
    assert glob.glob(os.path.join(output, "data", "eval-*.tfrecord.gz"))
    assert not os.path.exists(os.path.join(output, ".work"))
    transform_output = tft.TFTransformOutput(output)
    assert transform_output.transformed_feature_spec()["history"] == tf.io.VarLenFeature(tf.int64)
    assert transform_output.raw_feature_spec()["history"] == tf.io.VarLenFeature(tf.string)


def test_report_marks_the_chosen_length(chain):
    page = open(os.path.join(chain["output"], "report.html")).read()
    length = chain["plan"].features["history"].max_sequence_length
    assert f"max_sequence_length = {length}" in page
    assert page.count("<svg") == 1 + len(chain["stats"]["vocabularies"])
    assert "<script" not in page and "http" not in page.replace("http://www.w3.org", "")


def test_rows_add_up(chain):
    rows = chain["stats"]["rows"]
    assert rows["read"] == SMALL_ROWS
    assert rows["read"] == rows["train"] + rows["validation"] + rows["eval"] + rows["rejected"]
    assert rows["rejected"] == 0
    assert 0.05 < rows["eval"] / SMALL_ROWS < 0.2
    on_disk = artifacts.read_json(chain["output"], "stats.json")
    assert on_disk["rows"] == rows


def _transformed_rows(output, split):
    spec = tft.TFTransformOutput(output).transformed_feature_spec()
    files = sorted(glob.glob(os.path.join(output, "data", f"{split}-*.tfrecord.gz")))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(512)
    yield from dataset.map(lambda s: tf.io.parse_example(s, spec))


def test_length_histogram_equals_an_independent_count(chain):
    # Count history lengths in the transformed train TFRecords, and all lengths in the raw CSV.
    train_counts = Counter()
    rows = 0
    for batch in _transformed_rows(chain["output"], "train"):
        lengths = tf.sparse.reduce_sum(
            tf.sparse.map_values(tf.ones_like, batch["history"]), axis=1
        ).numpy()
        rows += len(lengths)
        train_counts.update(int(n) for n in lengths)
    summary = chain["stats"]["sequences"]["history"]
    assert summary["histogram"] == {str(n): c for n, c in sorted(train_counts.items())}
    assert summary["count"] == rows == chain["stats"]["rows"]["train"]
    with open(chain["data"]) as f:
        raw = Counter(len(r["history"].split()) for r in csv.DictReader(f))
    eval_counts = Counter()
    for batch in _transformed_rows(chain["output"], "eval"):
        lengths = tf.sparse.reduce_sum(
            tf.sparse.map_values(tf.ones_like, batch["history"]), axis=1
        ).numpy()
        eval_counts.update(int(n) for n in lengths)
    assert train_counts + eval_counts == raw


def test_vocabulary_is_shared_and_sized_from_the_file(chain):
    output = chain["output"]
    vocabulary = tft.TFTransformOutput(output).vocabulary_by_name("items")
    with open(chain["data"]) as f:
        train_or_eval_items = set()
        for r in csv.DictReader(f):
            train_or_eval_items.update(r["history"].split())
            train_or_eval_items.add(r["item_id"])
    assert set(v.decode() for v in vocabulary) <= train_or_eval_items
    stats_items = chain["stats"]["vocabularies"]["items"]
    assert stats_items["features"] == ["history", "item_id"]
    assert stats_items["size"] == len(vocabulary)
    plan = artifacts.read_json(output, "embedding_plan.json")
    assert plan["tables"]["items"]["features"] == ["history", "item_id"]
    assert plan["tables"]["items"]["vocabulary_size"] == len(vocabulary) + 1
    assert plan["features"]["history"]["table"] == plan["features"]["item_id"]["table"]
    longest = chain["stats"]["sequences"]["history"]["max"]
    assert 0 < plan["features"]["history"]["max_sequence_length"] < longest


def test_training_wrote_metrics_and_checkpoint(chain):
    metrics = json.loads(open(os.path.join(chain["model_dir"], "eval_metrics.json")).read())
    assert metrics["global_step"] == 20
    assert 0.0 <= metrics["auc"] <= 1.0
    assert np.isfinite(metrics["loss"])
    assert tf.train.latest_checkpoint(chain["model_dir"]).endswith("-20")
    saved_plan = json.loads(open(os.path.join(chain["model_dir"], "embedding_plan.json")).read())
    assert saved_plan == chain["plan"].to_dict()


def test_exported_model_serves_raw_examples(chain):
    export_dir = chain["metrics"]["export_dir"]
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    with open(chain["data"]) as f:
        rows = [r for _, r in zip(range(8), csv.DictReader(f), strict=False)]
    rows.append(
        {
            "item_id": "never-seen",
            "region": "nowhere",
            "device": "fridge",
            "history": "",
            "price": "3.5",
        }
    )
    rows.append(
        {
            "item_id": "i1",
            "region": "r1",
            "device": "mobile",
            "history": " ".join(["i2"] * 3000),
            "price": "1e3",
        }
    )
    probabilities = serve(examples=tf.constant([raw_example(r) for r in rows]))[
        "probabilities"
    ].numpy()
    assert probabilities.shape == (len(rows),)
    assert np.all((probabilities > 0) & (probabilities < 1))
    assert len(set(np.round(probabilities, 6))) > 1


def _rows_of(features: dict, count: int) -> list[tuple]:
    """Per row, a hashable tuple of every feature's values (sparse or dense), by name."""
    columns = {}
    for name, tensor in features.items():
        if isinstance(tensor, tf.SparseTensor):
            values = [[] for _ in range(count)]
            for (row, *_), value in zip(tensor.indices.numpy(), tensor.values.numpy(), strict=True):
                values[row].append(value.item())
            columns[name] = [tuple(v) for v in values]
        else:
            columns[name] = [tuple(np.ravel(v).tolist()) for v in tensor.numpy()]
    return [tuple((name, columns[name][i]) for name in sorted(columns)) for i in range(count)]


def _raw_tf_example(row: dict, raw_spec: dict) -> bytes:
    """A raw csv row as the tf.Example the raw schema describes (label included)."""
    example = tf.train.Example()
    for name, spec in raw_spec.items():
        cell = row[name]
        values = cell.split() if isinstance(spec, tf.io.VarLenFeature) else [cell]
        feature = example.features.feature[name]
        if spec.dtype == tf.string:
            feature.bytes_list.value.extend(v.encode() for v in values)
        elif spec.dtype == tf.int64:
            feature.int64_list.value.extend(int(v) for v in values)
        else:
            feature.float_list.value.extend(float(v) for v in values)
    return example.SerializeToString()


def test_the_transform_graph_transforms_raw_rows_as_the_pipeline_did(small_pipeline_output):
    """The contract between the environments: the transform graph that the pipeline
    environment's tf.Transform wrote, loaded by this (the trainer's) tf.Transform, turns every
    raw example row into exactly the transformed example the pipeline wrote for it."""
    output = small_pipeline_output["output"]
    stats = small_pipeline_output["stats"]
    assert stats["rows"]["rejected"] == 0  # every raw row has its transformed example
    transform = tft.TFTransformOutput(output)
    raw_spec = transform.raw_feature_spec()
    with open(small_pipeline_output["data"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == SMALL_ROWS
    raw = tf.io.parse_example(tf.constant([_raw_tf_example(r, raw_spec) for r in rows]), raw_spec)
    here = _rows_of(transform.transform_raw_features(raw), len(rows))

    written_spec = transform.transformed_feature_spec()
    files = sorted(glob.glob(os.path.join(output, "data", "*.tfrecord.gz")))
    records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    assert len(records) == SMALL_ROWS
    written = _rows_of(tf.io.parse_example(tf.constant(records), written_spec), len(records))

    assert {name for name, _ in here[0]} == set(written_spec)
    assert Counter(here) == Counter(written)
    assert len(set(written)) > SMALL_ROWS // 2  # rows that differ, not one row repeated
