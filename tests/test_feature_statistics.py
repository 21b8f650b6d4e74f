"""OUTPUT/statistics/*.pb and OUTPUT/schema.pbtxt: the ecosystem's formats, stats.json's figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from common import artifacts
from common.config import read_pipeline_config
from pipeline.feature_statistics import SCHEMA, statistics_file

pytestmark = pytest.mark.slow


def _load(output: str, split: str) -> statistics_pb2.DatasetFeatureStatisticsList:
    return statistics_pb2.DatasetFeatureStatisticsList.FromString(
        (Path(output) / statistics_file(split)).read_bytes()
    )


def _features(statistics) -> dict:
    (dataset,) = statistics.datasets
    return {feature.path.step[0]: feature for feature in dataset.features}


def test_train_and_eval_statistics_hold_stats_json_figures(small_pipeline_output):
    output = small_pipeline_output["output"]
    stats = json.loads((Path(output) / "stats.json").read_text())
    config = read_pipeline_config(output)
    for split in ("train", "eval"):
        statistics = _load(output, split)
        (dataset,) = statistics.datasets
        assert dataset.name == split
        assert dataset.num_examples == stats["rows"][split] > 0
        features = _features(statistics)
        assert sorted(features) == sorted([f.name for f in config.features] + ["clicked"])
        history = features["history"].string_stats.common_stats
        lengths = (
            stats["sequences"]["history"]
            if split == "train"
            else (stats["eval_skew"]["lengths"]["history"])
        )
        assert history.num_non_missing == lengths["count"]
        assert history.tot_num_values == lengths["ids"]
        assert (history.min_num_values, history.max_num_values) == (
            lengths["min"],
            lengths["max"],
        )
        assert history.avg_num_values == pytest.approx(lengths["mean"])
        device = features["device"].string_stats
        assert device.common_stats.num_non_missing == stats["rows"][split]
        assert device.common_stats.num_missing == 0
        # The label's figures, against the labels of the split's written examples.
        labels = np.array(_labels(output, split, "clicked"))
        label = features["clicked"].num_stats
        assert label.mean == pytest.approx(labels.mean()) and 0 < label.mean < 1
        assert label.std_dev == pytest.approx(labels.std())
        assert (label.min, label.max, label.num_zeros) == (0, 1, int((labels == 0).sum()))
        price = features["price"].num_stats
        moments = (
            stats["numeric"]["price"]
            if split == "train"
            else (stats["eval_skew"]["numeric"]["price"])
        )
        assert moments["count"] == stats["rows"][split]
        assert (price.mean, price.std_dev, price.min, price.max) == pytest.approx(
            (moments["mean"], moments["std"], moments["min"], moments["max"])
        )
        assert price.mean > 0 and price.num_zeros == moments["zeros"]
    train = _features(_load(output, "train"))
    assert train["device"].string_stats.unique == stats["vocabularies"]["device"]["distinct_values"]
    assert train["region"].string_stats.unique == stats["vocabularies"]["region"]["distinct_values"]
    # item_id shares its vocabulary with history: the vocabulary's count is not item_id's.
    assert not train["item_id"].string_stats.unique
    price = train["price"].num_stats
    numeric = stats["numeric"]["price"]
    assert (price.mean, price.std_dev, price.min, price.max) == pytest.approx(
        (numeric["mean"], numeric["std"], numeric["min"], numeric["max"])
    )


def test_statistics_and_schema_are_committed_in_the_manifest(small_pipeline_output):
    output = small_pipeline_output["output"]
    manifest = artifacts.read_manifest(output)
    listed = set(manifest.files)
    assert {statistics_file("train"), statistics_file("eval"), SCHEMA} <= listed
    schema = text_format.Parse((Path(output) / SCHEMA).read_text(), schema_pb2.Schema())
    assert sorted(f.name for f in schema.feature) == sorted(
        ["clicked", "device", "history", "item_id", "price", "region"]
    )
    report = (Path(output) / artifacts.REPORT).read_text()
    assert f"href='{statistics_file('eval')}'" in report and f"href='{SCHEMA}'" in report


@pytest.mark.trainer_env  # TFDV 1.15 sits beside TensorFlow 2.15 (the trainer-dev extra)
def test_tensorflow_data_validation_reads_them(small_pipeline_output):
    import tensorflow_data_validation as tfdv  # a dev dependency

    output = small_pipeline_output["output"]
    stats = json.loads((Path(output) / "stats.json").read_text())
    train = tfdv.load_stats_binary(str(Path(output) / statistics_file("train")))
    assert train.datasets[0].num_examples == stats["rows"]["train"]
    schema = tfdv.load_schema_text(str(Path(output) / SCHEMA))
    anomalies = tfdv.validate_statistics(
        tfdv.load_stats_binary(str(Path(output) / statistics_file("eval"))), schema
    )
    # Every column the schema names is present in every eval row, as the pipeline counted.
    assert dict(anomalies.anomaly_info) == {}


def _labels(output: str, split: str, name: str) -> list[float]:
    import tensorflow as tf

    files = artifacts.data_files(output, split)
    return [
        tf.train.Example.FromString(r.numpy()).features.feature[name].float_list.value[0]
        for r in tf.data.TFRecordDataset(files, compression_type="GZIP")
    ]
