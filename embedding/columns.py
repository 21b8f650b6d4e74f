"""The plan -> TPU embedding feature columns and the `EmbeddingConfigSpec`.

One table per vocabulary: a table with several features becomes
`tf.compat.v1.tpu.experimental.shared_embedding_columns`, a table with one feature an
`embedding_column`. A bag (an unordered list of ids) is a `categorical_column_with_identity`
over its multi-valued sparse ids with `max_sequence_length` 0: the TPU pools its ids with the
table's combiner in the lookup, as the CPU's `DenseFeatures` does. Ids are identity columns
sized from the plan (vocabulary entries plus OOV buckets), so every column of a shared table
has the same number of buckets by construction.

With `id_bias`, every categorical (one id a row) feature also gets a per-id bias: a table of
dimension 1 over the same ids, shared like the main table (`TABLE__bias`), looked up under
the feature key `FEATURE__bias` (`bias_feature`; TPU embedding feature keys must be unique, so
the input repeats the ids under that key). It is the linear part of the model: an item's own
click rate is one number per id, learned directly rather than through the DNN.

The arguments are checked here before TensorFlow sees them, so a mistake is reported with the
feature or table it concerns and the fix, instead of TensorFlow's positional message.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from common.config import BIAS_SUFFIX, EmbeddingConfig
from common.plan import EmbeddingPlan, TablePlan


def bias_feature(name: str) -> str:
    """The feature key under which a categorical feature's ids look up their bias."""
    return name + BIAS_SUFFIX


def bias_features(plan: EmbeddingPlan) -> list[str]:
    """The features that get a per-id bias: the categorical (one id a row) ones."""
    return sorted(n for n, f in plan.features.items() if f.type == "categorical")


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
      dense: the pooled ones (categorical, and sequences with `pool_sequences`), each for
        a `DenseFeatures` layer.
      sequence: sequence feature name -> its column, each for its own `SequenceFeatures`.
      bias: categorical feature name -> its per-id bias column (dimension 1); empty without
        `id_bias`.
    """

    all: list
    dense: list
    sequence: dict[str, Any]
    bias: dict[str, Any] = dataclasses.field(default_factory=dict)


def _table_columns(
    table: TablePlan, plan: EmbeddingPlan, initializer: Callable | None, pool_sequences: bool
) -> list:
    features = [plan.features[name] for name in table.features]
    # A pooled sequence is looked up like a bag of ids: the TPU's combiner pools it.
    as_sequence = [f.type == "sequence" and not pool_sequences for f in features]
    lengths = [
        int(f.max_sequence_length) if sequence else 0
        for f, sequence in zip(features, as_sequence, strict=True)
    ]
    check_column_arguments(
        table.name,
        [f.name for f in features],
        [table.vocabulary_size] * len(features),
        as_sequence,
        table.dimension,
        lengths,
        initializer,
        {t.name: t.features for t in plan.tables.values()},
    )
    categorical = [
        (
            tf.feature_column.sequence_categorical_column_with_identity
            if sequence
            else tf.feature_column.categorical_column_with_identity
        )(f.name, num_buckets=int(table.vocabulary_size))
        for f, sequence in zip(features, as_sequence, strict=True)
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


def cosine_decay(learning_rate: float, total_steps: int) -> Callable:
    """global step -> learning_rate * (1 + cos(pi * min(step / total_steps, 1))) / 2: the full
    rate at step 0, half of it halfway, 0 at `total_steps` and after.

    A TPU table's `learning_rate_fn` (the embedding engine calls it with the global step
    each step) and the CPU optimizer's rate alike, so both train with the same rates.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")

    def rate(global_step):
        done = tf.minimum(tf.cast(global_step, tf.float32) / float(total_steps), 1.0)
        return learning_rate * 0.5 * (1.0 + tf.cos(math.pi * done))

    return rate


def _bias_columns(
    table: TablePlan, plan: EmbeddingPlan, learning_rate_fn: Callable | None = None
) -> list:
    """The dimension-1 bias columns of the table's categorical features, in one shared
    table `TABLE__bias` (started at 0: an unseen id adds nothing), trained at
    `learning_rate_fn(global step)` if given, else at the `[embedding]` rate."""
    names = [n for n in table.features if plan.features[n].type == "categorical"]
    categorical = [
        tf.feature_column.categorical_column_with_identity(
            bias_feature(n), num_buckets=int(table.vocabulary_size)
        )
        for n in names
    ]
    zeros = tf.compat.v1.zeros_initializer()
    if len(categorical) == 1:
        return [
            tf.compat.v1.tpu.experimental.embedding_column(
                categorical[0],
                dimension=1,
                combiner=table.combiner,
                initializer=zeros,
                learning_rate_fn=learning_rate_fn,
            )
        ]
    return tf.compat.v1.tpu.experimental.shared_embedding_columns(
        categorical,
        dimension=1,
        combiner=table.combiner,
        initializer=zeros,
        shared_embedding_collection_name=table.name + BIAS_SUFFIX,
        max_sequence_lengths=[0] * len(categorical),
        learning_rate_fn=learning_rate_fn,
    )


def create_feature_columns(
    plan: EmbeddingPlan,
    initializer: Callable | None = None,
    id_bias: bool = False,
    pool_sequences: bool = False,
    bias_learning_rate_fn: Callable | None = None,
) -> FeatureColumns:
    """Builds the TPU embedding columns of every planned table.

    Args:
      plan: the embedding plan.
      initializer: the embedding initializer; None uses TensorFlow's default, a truncated
        normal with standard deviation 1/sqrt(dimension).
      id_bias: also a per-id bias (dimension 1) for every categorical feature.
      pool_sequences: look sequences up pooled by the table's combiner (max_sequence_length
        0: on a TPU the embedding cores pool them and send one vector a row) instead of as
        [batch, max_sequence_length, dim] activations; for a model that only pools them.
        The input still truncates them to their planned length, so CPU and TPU pool the
        same ids.
      bias_learning_rate_fn: global step -> the bias tables' learning rate (e.g.
        `cosine_decay`); None trains them at the `[embedding]` rate.
    """
    all_columns, dense, sequence, bias = [], [], {}, {}
    for table in plan.tables.values():
        for column in _table_columns(table, plan, initializer, pool_sequences):
            all_columns.append(column)
            name = column.categorical_column.name
            if plan.features[name].type == "sequence" and not pool_sequences:
                sequence[name] = column
            else:
                dense.append(column)
        if id_bias and any(plan.features[n].type == "categorical" for n in table.features):
            for column in _bias_columns(table, plan, bias_learning_rate_fn):
                all_columns.append(column)
                bias[column.categorical_column.name[: -len(BIAS_SUFFIX)]] = column
    return FeatureColumns(all=all_columns, dense=dense, sequence=sequence, bias=bias)


def optimization_parameters(embedding: EmbeddingConfig):
    """The TPU embedding optimizer of the config (TPU defaults for everything not set)."""
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


class TPUEmbeddingAdam(tf.compat.v1.train.Optimizer):
    """Adam as the TPU's embedding engine runs it with `AdamParameters`' defaults, for CPU.

    Per looked-up row r (lazy: rows not in the batch keep their weights and moments):
    m_r = b1 m_r + (1 - b1) g_r, v_r = b2 v_r + (1 - b2) g_r^2, w_r -= lr m_r / sqrt(v_r + eps^2)
    (`sum_inside_sqrt`), with no bias correction (the TPU has none). Slots are named as the
    TPU names them (`TABLE/Adam/m`, `TABLE/Adam/v`), so checkpoints move between the two.
    `tf.compat.v1.train.AdamOptimizer` differs in all three points and in the slot names.
    """

    def __init__(
        self,
        learning_rate: float,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        name: str = "Adam",
    ):
        super().__init__(use_locking=False, name=name)
        self._lr, self._beta1, self._beta2, self._epsilon = learning_rate, beta1, beta2, epsilon

    def _create_slots(self, var_list):
        for var in var_list:
            self._zeros_slot(var, "m", f"{self._name}/m")
            self._zeros_slot(var, "v", f"{self._name}/v")

    def _resource_apply_sparse(self, grad, var, indices):
        # Duplicate ids were summed by the base class first, as the TPU accumulates them.
        m, v = self.get_slot(var, "m"), self.get_slot(var, "v")
        dtype = var.dtype.base_dtype
        beta1, beta2 = tf.cast(self._beta1, dtype), tf.cast(self._beta2, dtype)
        m_rows = beta1 * tf.gather(m, indices) + (1 - beta1) * grad
        v_rows = beta2 * tf.gather(v, indices) + (1 - beta2) * tf.square(grad)
        step = tf.cast(self._lr, dtype) * m_rows / tf.sqrt(v_rows + self._epsilon**2)
        return tf.group(
            m.scatter_update(tf.IndexedSlices(m_rows, indices)),
            v.scatter_update(tf.IndexedSlices(v_rows, indices)),
            var.scatter_sub(tf.IndexedSlices(step, indices)),
        )

    def _resource_apply_dense(self, grad, var):
        rows = tf.range(tf.shape(grad, out_type=tf.int64)[0])
        return self._resource_apply_sparse(grad, var, rows)


def cpu_optimizer(embedding: EmbeddingConfig, learning_rate=None) -> tf.compat.v1.train.Optimizer:
    """The CPU optimizer that trains the tables as `optimization_parameters` does on a TPU.

    Adagrad and SGD are TensorFlow's (the TPU's Adagrad starts its accumulator at 0.1, as
    `AdagradOptimizer` does, and names its slot `TABLE/Adagrad` as well); Adam is
    `TPUEmbeddingAdam`. Weight clipping is applied by the caller after the update
    (`clip_updated_rows`), as the TPU clips after its update. `learning_rate` (a float, or a
    tensor: a table's `learning_rate_fn` of the global step) replaces the config's rate.
    """
    rate = embedding.learning_rate if learning_rate is None else learning_rate
    if embedding.optimizer == "adagrad":
        return tf.compat.v1.train.AdagradOptimizer(rate, initial_accumulator_value=0.1)
    if embedding.optimizer == "adam":
        return TPUEmbeddingAdam(rate)
    return tf.compat.v1.train.GradientDescentOptimizer(rate)


def clip_updated_rows(grads_and_vars: list, embedding: EmbeddingConfig) -> list:
    """Ops that clip the weights of the rows just updated to [clip_weight_min, clip_weight_max],
    as the TPU does after each update; rows not looked up keep their weights. Run them after
    the optimizer's update. No ops when the config sets no clipping."""
    low, high = embedding.clip_weight_min, embedding.clip_weight_max
    if low is None and high is None:
        return []
    ops = []
    for grad, var in grads_and_vars:
        if grad is None:
            continue
        if isinstance(grad, tf.IndexedSlices):
            rows, _ = tf.unique(grad.indices)
        else:
            rows = tf.range(tf.shape(var, out_type=tf.int64)[0])
        weights = tf.gather(var, rows)
        if low is not None:
            weights = tf.maximum(weights, low)
        if high is not None:
            weights = tf.minimum(weights, high)
        ops.append(tf.compat.v1.scatter_update(var, rows, weights))
    return ops


def create_embedding_config_spec(columns: FeatureColumns, embedding: EmbeddingConfig):
    """The `EmbeddingConfigSpec` that puts the tables on the TPU's embedding cores."""
    return tf.compat.v1.estimator.tpu.experimental.EmbeddingConfigSpec(
        feature_columns=columns.all,
        optimization_parameters=optimization_parameters(embedding),
    )
