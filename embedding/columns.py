"""The plan -> TPU embedding feature columns and the `EmbeddingConfigSpec`.

One table per vocabulary: a table with several features becomes
`tf.compat.v1.tpu.experimental.shared_embedding_columns`, a table with one feature an
`embedding_column`. Ids are identity columns sized from the plan (vocabulary entries plus OOV
buckets), so every column of a shared table has the same number of buckets by construction.

The arguments are checked here before TensorFlow sees them, so a mistake is reported with the
feature or table it concerns and the fix, instead of TensorFlow's positional message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from common.config import EmbeddingConfig
from common.plan import EmbeddingPlan, TablePlan


class ColumnError(ValueError):
    """Column arguments TensorFlow would refuse; the message names the feature or table."""


def check_column_arguments(
    table: str,
    features: Sequence[str],
    buckets: Sequence[int],
    is_sequence: Sequence[bool],
    dimension: Any,
    max_sequence_lengths: Sequence[Any],
    initializer: Any = None,
    other_tables: dict[str, Sequence[str]] | None = None,
) -> None:
    """Validates one table's column arguments.

    Args:
      table: the table (vocabulary) name.
      features: its features, in column order.
      buckets: each feature's number of id buckets.
      is_sequence: whether each feature is a sequence.
      dimension: the embedding dimension.
      max_sequence_lengths: one per feature; 0 for a non-sequence feature.
      initializer: None or a callable.
      other_tables: the features of every other table, to catch a feature in two tables.

    Raises:
      ColumnError: naming the table or feature and what to change.
    """
    if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
        raise ColumnError(
            f"table {table!r}: dimension must be a positive int, got {dimension!r}; set "
            "[embedding] dimension or [vocabulary.<name>] dimension to an integer > 0"
        )
    if initializer is not None and not callable(initializer):
        raise ColumnError(
            f"table {table!r}: initializer must be callable (e.g. "
            f"tf.compat.v1.truncated_normal_initializer()), got {initializer!r}"
        )
    if len(max_sequence_lengths) != len(features):
        raise ColumnError(
            f"table {table!r}: {len(max_sequence_lengths)} max_sequence_lengths for "
            f"{len(features)} features ({', '.join(features)}); give one per feature, 0 for "
            "a non-sequence feature"
        )
    for name, length, sequence in zip(features, max_sequence_lengths, is_sequence, strict=True):
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ColumnError(
                f"feature {name!r}: max_sequence_length must be a non-negative int, got {length!r}"
            )
        if sequence and length == 0:
            raise ColumnError(
                f"feature {name!r} is a sequence but its max_sequence_length is 0; plan it "
                "from the length histogram or set max_sequence_length in its [[feature]]"
            )
        if not sequence and length > 0:
            raise ColumnError(
                f"feature {name!r} is not a sequence but has max_sequence_length {length}; "
                "use 0 for categorical features"
            )
    for name, size in zip(features, buckets, strict=True):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ColumnError(
                f"feature {name!r}: bucket count must be a positive Python int, got {size!r}"
            )
    if len(set(buckets)) > 1:
        sizes = ", ".join(f"{n}={b}" for n, b in zip(features, buckets, strict=True))
        raise ColumnError(
            f"table {table!r}: shared columns must have the same number of buckets, got "
            f"{sizes}; size them all from the one shared vocabulary"
        )
    for other, names in (other_tables or {}).items():
        if other == table:
            continue
        both = sorted(set(names) & set(features))
        if both:
            raise ColumnError(
                f"feature {both[0]!r} is in two tables, {other!r} and {table!r}; a feature "
                "names one vocabulary"
            )


@dataclasses.dataclass
class FeatureColumns:
    """The model's embedding columns.

    Attributes:
      all: every TPU embedding column, for the `EmbeddingConfigSpec`.
      dense: the non-sequence ones, for one `DenseFeatures` layer.
      sequence: sequence feature name -> its column, each for its own `SequenceFeatures`.
    """

    all: list
    dense: list
    sequence: dict[str, Any]


def _table_columns(table: TablePlan, plan: EmbeddingPlan, initializer: Callable | None) -> list:
    features = [plan.features[name] for name in table.features]
    lengths = [int(f.max_sequence_length) if f.type == "sequence" else 0 for f in features]
    check_column_arguments(
        table.name,
        [f.name for f in features],
        [table.vocabulary_size] * len(features),
        [f.type == "sequence" for f in features],
        table.dimension,
        lengths,
        initializer,
        {t.name: t.features for t in plan.tables.values()},
    )
    categorical = [
        (
            tf.feature_column.sequence_categorical_column_with_identity
            if f.type == "sequence"
            else tf.feature_column.categorical_column_with_identity
        )(f.name, num_buckets=int(table.vocabulary_size))
        for f in features
    ]
    if len(categorical) == 1:
        return [
            tf.compat.v1.tpu.experimental.embedding_column(
                categorical[0],
                dimension=int(table.dimension),
                combiner=table.combiner,
                initializer=initializer,
                max_sequence_length=lengths[0],
                learning_rate_fn=None,
            )
        ]
    return tf.compat.v1.tpu.experimental.shared_embedding_columns(
        categorical,
        dimension=int(table.dimension),
        combiner=table.combiner,
        initializer=initializer,
        shared_embedding_collection_name=table.name,
        max_sequence_lengths=lengths,
        learning_rate_fn=None,
    )


def create_feature_columns(
    plan: EmbeddingPlan, initializer: Callable | None = None
) -> FeatureColumns:
    """Builds the TPU embedding columns of every planned table.

    Args:
      plan: the embedding plan.
      initializer: the embedding initializer; None uses TensorFlow's default, a truncated
        normal with standard deviation 1/sqrt(dimension).
    """
    all_columns, dense, sequence = [], [], {}
    for table in plan.tables.values():
        for column in _table_columns(table, plan, initializer):
            all_columns.append(column)
            name = column.categorical_column.name
            if plan.features[name].type == "sequence":
                sequence[name] = column
            else:
                dense.append(column)
    return FeatureColumns(all=all_columns, dense=dense, sequence=sequence)


def optimization_parameters(embedding: EmbeddingConfig):
    """The TPU embedding optimizer of the config."""
    clip = {}
    if embedding.clip_weight_min is not None:
        clip["clip_weight_min"] = embedding.clip_weight_min
    if embedding.clip_weight_max is not None:
        clip["clip_weight_max"] = embedding.clip_weight_max
    tpu = tf.compat.v1.tpu.experimental
    if embedding.optimizer == "adagrad":
        return tpu.AdagradParameters(learning_rate=embedding.learning_rate, **clip)
    if embedding.optimizer == "adam":
        return tpu.AdamParameters(learning_rate=embedding.learning_rate, **clip)
    return tpu.StochasticGradientDescentParameters(learning_rate=embedding.learning_rate, **clip)


def create_embedding_config_spec(columns: FeatureColumns, embedding: EmbeddingConfig):
    """The `EmbeddingConfigSpec` that puts the tables on the TPU's embedding cores."""
    return tf.compat.v1.estimator.tpu.experimental.EmbeddingConfigSpec(
        feature_columns=columns.all,
        optimization_parameters=optimization_parameters(embedding),
    )
