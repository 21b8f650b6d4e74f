"""stats.json's figures as TensorFlow Data Validation and Facets read them.

`statistics_list(stats, config, split)` turns what the pipeline measured into a
`tensorflow_metadata` `DatasetFeatureStatisticsList` of one dataset, the split: per raw column
(the features and the label, as tf.Transform's raw schema has them) the rows holding it, its
number of values a row (min, max, mean, total; exact, from the length histograms), the
distinct values of a column that has a vocabulary of its own, and mean, standard deviation,
min, max and zeros of a numeric column and of the label, in each split. Every figure is one
of stats.json's, nothing is estimated. What the pipeline does not measure (the distinct values
of a column that shares its vocabulary, or of any column in eval) is not set; the protos have
no "unset" for a number, so TFDV and Facets show 0 there. A row with a missing value
is rejected, so no kept row misses a column: `num_missing` is 0.

`tfdv.load_stats_binary(OUTPUT/statistics/train.pb)` reads the written files; `schema.pbtxt`
beside them is the raw schema tf.Transform read the rows with (`tfdv.load_schema_text`).
Depends on protobuf and tensorflow_metadata only.
"""

from __future__ import annotations

from typing import Any

from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from common import artifacts
from common.config import LIST_TYPES, Config

STATISTICS_DIR = artifacts.STATISTICS_DIR
SCHEMA = artifacts.SCHEMA
SPLITS = ("train", "eval")
"""The splits stats.json measures column by column (validation: its row count only)."""


def statistics_file(split: str) -> str:
    """The path of a split's statistics, relative to OUTPUT."""
    return f"{STATISTICS_DIR}/{split}.pb"


def _list_summary(stats: dict[str, Any], split: str, name: str, kind: str) -> dict[str, Any]:
    if split == "train":
        return stats[kind][name]
    return stats["eval_skew"]["lengths"][name]


def statistics_list(
    stats: dict[str, Any], config: Config, split: str
) -> statistics_pb2.DatasetFeatureStatisticsList:
    """One split's statistics from stats.json.

    Args:
      stats: stats.json as the pipeline wrote it.
      config: the run's config.
      split: "train" or "eval".
    """
    rows = int(stats["rows"][split])
    result = statistics_pb2.DatasetFeatureStatisticsList()
    dataset = result.datasets.add(name=split, num_examples=rows)
    vocabularies = stats["vocabularies"]
    for feature in config.features:
        out = dataset.features.add()
        out.path.step.append(feature.name)
        if feature.type == "numeric":
            out.type = statistics_pb2.FeatureNameStatistics.FLOAT
            _numeric(out.num_stats, rows, _moments(stats, split, feature.name))
            continue
        out.type = statistics_pb2.FeatureNameStatistics.STRING
        common = out.string_stats.common_stats
        if feature.type in LIST_TYPES:
            kind = "sequences" if feature.type == "sequence" else "bags"
            summary = _list_summary(stats, split, feature.name, kind)
            common.num_non_missing = int(summary["count"])
            common.num_missing = 0
            if summary["count"]:  # no sequences, no lengths
                common.min_num_values = int(summary["min"])
                common.max_num_values = int(summary["max"])
                common.avg_num_values = float(summary["mean"])
            common.tot_num_values = int(summary["ids"])
        else:
            _scalar(common, rows)
        vocabulary = vocabularies[config.vocabulary_of(feature)]
        if split == "train" and vocabulary["features"] == [feature.name]:
            out.string_stats.unique = int(vocabulary["distinct_values"])
    label = dataset.features.add()
    label.path.step.append(config.label.name)
    label.type = statistics_pb2.FeatureNameStatistics.FLOAT
    _numeric(label.num_stats, rows, _moments(stats, split, config.label.name))
    return result


def _moments(stats: dict[str, Any], split: str, name: str) -> dict[str, Any] | None:
    """A numeric column's (or the label's) figures in one split, as stats.json has them;
    None where stats.json has none (written by an earlier version)."""
    if split == "train":
        if name == stats["label"]["name"]:
            return stats["label"] if "count" in stats["label"] else None
        return stats["numeric"].get(name)
    return stats["eval_skew"].get("numeric", {}).get(name)


def _numeric(out: statistics_pb2.NumericStatistics, rows: int, moments: dict | None) -> None:
    _scalar(out.common_stats, rows)
    if moments and moments["count"]:  # no figure of no values
        out.mean = moments["mean"]
        out.std_dev = moments["std"]
        out.min = moments["min"]
        out.max = moments["max"]
        out.num_zeros = moments["zeros"]


def _scalar(common: statistics_pb2.CommonStatistics, rows: int) -> None:
    """A column with exactly one value in each of `rows` rows."""
    common.num_non_missing = rows
    common.num_missing = 0
    common.min_num_values = 1 if rows else 0
    common.max_num_values = 1 if rows else 0
    common.avg_num_values = 1.0 if rows else 0.0
    common.tot_num_values = rows


def schema_text(schema: schema_pb2.Schema) -> str:
    """The schema in protobuf text format, as `tfdv.load_schema_text` reads it."""
    from google.protobuf import text_format

    return text_format.MessageToString(schema)


def write(output: str, stats: dict[str, Any], config: Config, schema: schema_pb2.Schema) -> None:
    """Writes OUTPUT/statistics/{train,eval}.pb and OUTPUT/schema.pbtxt."""
    from common import storage

    for split in SPLITS:
        storage.write_bytes(
            artifacts.join(output, statistics_file(split)),
            statistics_list(stats, config, split).SerializeToString(deterministic=True),
        )
    artifacts.write_text(output, SCHEMA, schema_text(schema))
