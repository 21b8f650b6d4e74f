"""The data judges the columns, on one real DirectRunner pipeline over generated rows: a
validation split written and committed beside train and eval, the eval split measured against
training (the split key used as a feature is dropped by the planner, with its reason), and a
bag of ids planned with its cap, pooled, and trained on CPU."""

from __future__ import annotations

import csv

import pytest
import tensorflow as tf

from common import artifacts
from embedding.planner import plan_pipeline_output
from examples.clicks import generate
from pipeline import decode
from tests.conftest import example_config_text, run_pipeline
from trainer import task

pytestmark = [pytest.mark.slow, pytest.mark.trainer_env]

ROWS = 600


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    root = tmp_path_factory.mktemp("judged")
    text = example_config_text(validation=False)
    for old, new in [
        ("eval_fraction = 0.1 ", "eval_fraction = 0.2\nvalidation_fraction = 0.2 "),
        ('name = "history"\ntype = "sequence"', 'name = "history"\ntype = "bag"'),
        ('truncate = "keep_last"', ""),  # a bag is unordered: no end to keep
        (
            '[[feature]]\nname = "device"',
            '[[feature]]\nname = "user_id"\ntype = "categorical"\n\n[[feature]]\nname = "device"',
        ),
    ]:
        assert old in text, old
        text = text.replace(old, new)
    config = root / "features.toml"
    config.write_text(text)
    data = str(root / "clicks.csv")
    generate.write_csv(data, generate.generate(ROWS, seed=8))
    output = str(root / "out")
    stats = run_pipeline(["--config", str(config), "--input", data, "--output", output])
    return {"data": data, "output": output, "stats": stats, "plan": plan_pipeline_output(output)}


def _count(files):
    return sum(1 for f in files for _ in tf.data.TFRecordDataset(f, compression_type="GZIP"))


def test_the_validation_split_is_written_counted_and_committed(judged):
    rows, output = judged["stats"]["rows"], judged["output"]
    assert rows["read"] == rows["train"] + rows["validation"] + rows["eval"] + rows["rejected"]
    assert rows["validation"] > 60 and rows["eval"] > 60 and rows["train"] > 200
    manifest = artifacts.require_complete(output)
    for split in ("train", "validation", "eval"):
        assert _count(manifest.data_files(split)) == rows[split], split
    # Each user's rows are in the split its key hashes to.
    with open(judged["data"]) as f:
        users = {row["user_id"] for row in csv.DictReader(f)}
    by_split = {decode.split_of(u, 0.2, 0.2) for u in users}
    assert by_split == {"train", "validation", "eval"}


def test_the_split_key_as_a_feature_is_dropped_for_unseen_eval_values(judged):
    stats, plan = judged["stats"], judged["plan"]
    skew = stats["eval_skew"]["features"]
    assert skew["user_id"]["unseen_rate"] == 1.0  # every eval user is new
    assert skew["user_id"]["tokens"] == stats["rows"]["eval"]
    assert skew["item_id"]["unseen_rate"] < 0.5
    assert stats["vocabularies"]["user_id"]["eval_unseen_rate"] == 1.0
    # The split key is kept, for a per-key term in training only (a bias, no embedding): its
    # note says why, with the share of eval values training never saw.
    assert "user_id" in plan.features and "user_id" not in plan.dropped
    (note,) = [n for n in plan.notes if n.startswith("user_id: the split key")]
    assert f"100.0% of its {stats['rows']['eval']} eval values" in note
    assert "item_id" in plan.features


def test_a_bag_is_measured_planned_pooled_and_trained(judged, tmp_path):
    stats, plan, output = judged["stats"], judged["plan"], judged["output"]
    assert "history" in stats["bags"] and "history" not in stats["sequences"]
    assert stats["eval_skew"]["lengths"]["history"]["count"] == stats["rows"]["eval"]
    history = plan.features["history"]
    assert (history.type, history.max_sequence_length) == ("bag", 0)
    assert history.max_ids == stats["bags"]["history"]["max"]  # no outlier: every id kept
    metrics = task.train_and_evaluate(
        task.parse_args(
            [
                "--pipeline-output",
                output,
                "--model-dir",
                str(tmp_path / "m"),
                "--train-steps",
                "20",
                "--batch-size",
                "32",
                "--no-export",
            ]
        )
    )
    # The reported figures are those of the checkpoint validation chose (the start, where
    # counting ends, is a candidate); the last one trained to step 20.
    last = metrics.get("last", metrics)
    assert last["global_step"] == 20 and metrics["examples"] == stats["rows"]["eval"]
    assert metrics["loss"] == pytest.approx(metrics["loss"])  # not NaN
    names = tf.train.load_checkpoint(str(tmp_path / "m")).get_variable_to_shape_map()
    # The bag is looked up in the shared items table and pooled by the lookup: no sequence
    # layer exists for it.
    assert "items" in names, sorted(names)
    assert not any(n.startswith("sequence_") for n in names), sorted(names)


def test_the_tpu_graph_pools_the_bag_in_the_embedding_lookup(judged, tmp_path):
    from common.config import read_pipeline_config
    from tests.test_tpu_graph import (
        TPU_FLAGS,
        FakeTPU,
        _args,
        _assert_configuration_is_the_plan,
        _embedding_configuration,
    )

    output, plan = judged["output"], judged["plan"]
    tpu = FakeTPU(hosts=1, cores_per_host=8)
    with tpu.installed():
        task.train_and_evaluate(_args(output, tmp_path / "m", "--train-steps", "4", *TPU_FLAGS))
    configuration = _embedding_configuration(tpu.train_graph)
    embedding = read_pipeline_config(output).embedding
    from trainer.prepare import key_features

    keys = key_features(plan, read_pipeline_config(output))
    assert keys == ("user_id",)  # the split key: a bias in training, no embedding table
    _assert_configuration_is_the_plan(
        configuration, plan, embedding, hosts=1, cores=8, key_features=keys
    )
    tables = sorted(t.name for t in configuration.table_descriptor)
    shapes = [
        list(f.input_shape)
        for f in configuration.feature_descriptor
        if tables[f.table_id] == "tbl_items"
    ]
    assert shapes == [[64 // 8], [64 // 8]]  # the bag like the candidate item: pooled
