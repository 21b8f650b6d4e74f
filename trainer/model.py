"""The `model_fn`: TPU embeddings of every planned table, masked pooling, a DNN.

The same function builds the model on a TPU and on CPU, so variable names (and checkpoints)
are the same on both. On a TPU the optimizer is wrapped in `CrossShardOptimizer` and metrics
go through `TPUEstimatorSpec.eval_metrics`, which is also what runs on CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from common.plan import EmbeddingPlan
from embedding.columns import create_feature_columns

PROBABILITIES = "probabilities"
PREDICTIONS = "predictions"
LOG_EVERY_N_STEPS = 100


def masked_mean(sequence: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
    """Mean of the first `lengths[i]` steps of row i of `sequence` [batch, T, dim]; 0 if empty.

    The CPU lookup pads to the batch's longest sequence and the TPU's to
    max_sequence_length; masking by the true length makes both give the same mean.
    """
    mask = tf.sequence_mask(lengths, maxlen=tf.shape(sequence)[1], dtype=sequence.dtype)
    total = tf.reduce_sum(sequence * tf.expand_dims(mask, -1), axis=1)
    count = tf.maximum(tf.cast(tf.expand_dims(lengths, -1), sequence.dtype), 1.0)
    return total / count


def shared_table_interactions(plan: EmbeddingPlan, pooled: dict) -> list:
    """Dot products between the features of each shared table, e.g. the candidate item and
    the pooled history: they live in one embedding space, so their agreement is one number
    the DNN would otherwise have to learn to compute from the concatenation."""
    products = []
    for table in plan.tables.values():
        names = [n for n in table.features if n in pooled]
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                products.append(
                    tf.reduce_sum(pooled[a] * pooled[b], axis=1, keepdims=True, name=f"dot_{a}_{b}")
                )
    return products


def _optimizer(name: str, learning_rate: float):
    if name == "adam":
        return tf.compat.v1.train.AdamOptimizer(learning_rate)
    if name == "sgd":
        return tf.compat.v1.train.GradientDescentOptimizer(learning_rate)
    return tf.compat.v1.train.AdagradOptimizer(learning_rate)


def create_model_fn(
    plan: EmbeddingPlan,
    hidden_units: Sequence[int] = (128, 64),
    learning_rate: float = 0.05,
    optimizer: str = "adagrad",
    use_tpu: bool = False,
):
    """A TPUEstimator `model_fn` for the plan's features and label."""
    binary = plan.label["type"] == "binary"

    def model_fn(features, labels, mode, params):
        del params
        columns = create_feature_columns(plan)
        pooled = {}
        for column in columns.dense:
            name = column.categorical_column.name
            pooled[name] = tf.compat.v1.keras.layers.DenseFeatures([column], name=f"embed_{name}")(
                features
            )
        for name, column in sorted(columns.sequence.items()):
            sequence, lengths = tf.keras.experimental.SequenceFeatures(
                [column], name=f"sequence_{name}"
            )(features)
            pooled[name] = masked_mean(sequence, lengths)
        pieces = [pooled[name] for name in sorted(pooled)]
        pieces.extend(shared_table_interactions(plan, pooled))
        for name in plan.numeric_features:
            pieces.append(tf.reshape(features[name], [-1, 1]))
        net = tf.concat(pieces, axis=1)
        for i, units in enumerate(hidden_units):
            net = tf.compat.v1.layers.dense(net, units, activation=tf.nn.relu, name=f"hidden_{i}")
        logits = tf.reshape(tf.compat.v1.layers.dense(net, 1, name="logits"), [-1])
        if binary:
            predictions = {PROBABILITIES: tf.sigmoid(logits)}
        else:
            predictions = {PREDICTIONS: logits}

        if mode == tf.estimator.ModeKeys.PREDICT:
            return tf.compat.v1.estimator.tpu.TPUEstimatorSpec(
                mode,
                predictions=predictions,
                export_outputs={"serving_default": tf.estimator.export.PredictOutput(predictions)},
            )

        labels = tf.reshape(tf.cast(labels, tf.float32), [-1])
        if binary:
            loss = tf.compat.v1.losses.sigmoid_cross_entropy(labels, logits)
        else:
            loss = tf.compat.v1.losses.mean_squared_error(labels, logits)

        if mode == tf.estimator.ModeKeys.EVAL:
            return tf.compat.v1.estimator.tpu.TPUEstimatorSpec(
                mode, loss=loss, eval_metrics=(_metric_fn(binary), [labels, logits])
            )

        opt = _optimizer(optimizer, learning_rate)
        if use_tpu:
            opt = tf.compat.v1.tpu.CrossShardOptimizer(opt)
        global_step = tf.compat.v1.train.get_global_step()
        train_op = opt.minimize(loss, global_step=global_step)
        hooks = []
        if not use_tpu:  # on a TPU, TPUEstimator logs the loss after each loop itself
            hooks.append(
                tf.compat.v1.train.LoggingTensorHook(
                    {"loss": loss, "step": global_step},
                    every_n_iter=LOG_EVERY_N_STEPS,
                    formatter=lambda v: f"loss = {v['loss']:.4f}, step = {v['step']}",
                )
            )
        return tf.compat.v1.estimator.tpu.TPUEstimatorSpec(
            mode, loss=loss, train_op=train_op, training_hooks=hooks
        )

    return model_fn


def _metric_fn(binary: bool):
    def metric_fn(labels, logits):
        if binary:
            probabilities = tf.sigmoid(logits)
            return {
                "auc": tf.compat.v1.metrics.auc(labels, probabilities, num_thresholds=1000),
                "accuracy": tf.compat.v1.metrics.accuracy(
                    labels, tf.cast(tf.math.greater(probabilities, 0.5), tf.float32)
                ),
            }
        return {"rmse": tf.compat.v1.metrics.root_mean_squared_error(labels, logits)}

    return metric_fn
