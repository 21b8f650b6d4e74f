"""The `model_fn`: TPU embeddings of every planned table, masked pooling, a DNN.

The same function builds the model on a TPU and on CPU, so variable names (and checkpoints)
are the same on both. The embedding tables are trained as the TPU trains them, by the
`[embedding]` optimizer, learning rate and weight clipping: on a TPU by its embedding engine
(the `EmbeddingConfigSpec`), on CPU by `embedding.columns.cpu_optimizer`, whose slots carry the
TPU's names. The dense layers are trained by `--optimizer`, wrapped in `CrossShardOptimizer` on
a TPU. Metrics go through `TPUEstimatorSpec.eval_metrics`, which is also what runs on CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

from common.config import EmbeddingConfig
from common.plan import EmbeddingPlan
from embedding.columns import (
    bias_feature,
    clip_updated_rows,
    cpu_optimizer,
    create_feature_columns,
)
from trainer.metrics import AUC_THRESHOLDS, EXAMPLE_LOSS

PROBABILITIES = "probabilities"
PREDICTIONS = "predictions"
LOG_EVERY_N_STEPS = 100
EXAMPLES = "examples"
UNSEEN = "unseen_"
ID_BIAS_SCALE = 10.0
# TPUEstimator's stand-ins for the tables in the dense graph (tpu_embedding_gradient): it keeps
# them out of checkpoints, but not the slots the dense optimizer gives them.
TPU_DUMMY_TABLE_PREFIX = "tpu_embedding_dummy_table_variable_"


def masked_mean(sequence: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
    """Mean of the first `lengths[i]` steps of row i of `sequence` [batch, T, dim]; 0 if empty.

    The CPU lookup pads to the batch's longest sequence and the TPU's to
    max_sequence_length; masking by the true length makes both give the same mean.
    """
    mask = tf.sequence_mask(lengths, maxlen=tf.shape(sequence)[1], dtype=sequence.dtype)
    total = tf.reduce_sum(sequence * tf.expand_dims(mask, -1), axis=1)
    count = tf.maximum(tf.cast(tf.expand_dims(lengths, -1), sequence.dtype), 1.0)
    return total / count


def attend(sequence: tf.Tensor, lengths: tf.Tensor, query: tf.Tensor) -> tf.Tensor:
    """The candidate's attention over the history (DIN-style): a softmax over the first
    `lengths[i]` steps of `sequence` [batch, T, dim] of their scaled dot product with `query`
    [batch, dim], and the weighted sum of the steps; 0 for an empty sequence. Masking makes
    the CPU's batch-long padding and the TPU's max_sequence_length padding give the same."""
    dim = tf.cast(tf.shape(sequence)[2], sequence.dtype)
    scores = tf.reduce_sum(sequence * tf.expand_dims(query, 1), axis=2) / tf.sqrt(dim)
    mask = tf.sequence_mask(lengths, maxlen=tf.shape(sequence)[1])
    scores = tf.where(mask, scores, tf.fill(tf.shape(scores), tf.constant(-1e9, scores.dtype)))
    weights = tf.nn.softmax(scores, axis=1) * tf.cast(mask, sequence.dtype)
    return tf.reduce_sum(sequence * tf.expand_dims(weights, -1), axis=1)


def oov_rows(ids: tf.SparseTensor, entries: int) -> tf.Tensor:
    """1.0 for the rows of a categorical feature (one value a row) whose value is out of the
    vocabulary, else 0: an id in an OOV bucket (>= the vocabulary's `entries`), or no id at
    all, where a vocabulary without OOV buckets gave -1 and `prepare_features` dropped it (an
    empty row's max is the lowest int64)."""
    batch = ids.dense_shape[0]
    first = tf.math.unsorted_segment_max(ids.values, ids.indices[:, 0], batch)
    out = tf.math.logical_or(tf.math.greater_equal(first, entries), tf.math.less(first, 0))
    return tf.cast(out, tf.float32)


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
    embedding: EmbeddingConfig | None = None,
    id_bias: bool = True,
    id_bias_scale: float = ID_BIAS_SCALE,
    history_attention: bool = False,
    embedding_l2: float = 0.0,
    cross_layers: int = 2,
    bias_learning_rate_fn: Callable | None = None,
    key_features: Sequence[str] = (),
    bias_initial_values: dict | None = None,
    initial_logit: float = 0.0,
):
    """A TPUEstimator `model_fn` for the plan's features and label.

    Args:
      plan: the embedding plan.
      hidden_units: the DNN's layer sizes.
      learning_rate, optimizer: how the dense layers are trained (`--optimizer`).
      use_tpu: training runs on a TPU (TPUEstimator's `use_tpu`).
      embedding: the `[embedding]` config: how the tables are trained, on CPU as on a TPU.
      id_bias: add a per-id bias of every categorical feature to the logit (the input must
        carry the bias keys: `make_input_fn(..., id_bias=True)`).
      id_bias_scale: the factor on the bias in the logit.
      history_attention: also the candidate's attention over each sequence of its table.
      embedding_l2: weight of an L2 penalty on the embeddings each batch looks up.
      cross_layers: DCN-v2 cross layers before the DNN.
      bias_learning_rate_fn: global step -> the per-id bias tables' learning rate (the one
        the `EmbeddingConfigSpec`'s columns carry, `embedding.columns.cosine_decay`); None:
        the `[embedding]` rate.
      key_features: categorical features that get their per-id bias only (the split key:
        `embedding.columns.create_feature_columns`); the input carries them under their bias
        key only.
      bias_initial_values: table -> its bias table's initial rows
        (`trainer.baselines.initial_biases`); None: zeros.
      initial_logit: the output layer's initial bias (the training split's log-odds, or its
        label mean for regression), so that the model starts at the prior.
    """
    binary = plan.label["type"] == "binary"
    embedding = embedding or EmbeddingConfig()

    def model_fn(features, labels, mode, params, config):
        del params
        # Attention needs the history's positions; a model that only averages it lets the
        # lookup pool it (on a TPU: 1/L of the activations).
        columns = create_feature_columns(
            plan,
            id_bias=id_bias,
            pool_sequences=not history_attention,
            bias_learning_rate_fn=bias_learning_rate_fn,
            key_features=key_features,
            bias_initial_values=bias_initial_values,
        )
        before = set(_refs(tf.compat.v1.trainable_variables()))
        pooled = {}
        for column in columns.dense:
            name = column.categorical_column.name
            pooled[name] = tf.compat.v1.keras.layers.DenseFeatures([column], name=f"embed_{name}")(
                features
            )
        attended = {}
        for name, column in sorted(columns.sequence.items()):
            sequence, lengths = tf.keras.experimental.SequenceFeatures(
                [column], name=f"sequence_{name}"
            )(features)
            pooled[name] = masked_mean(sequence, lengths)
            if history_attention:
                table = plan.tables[plan.features[name].table]
                for query in table.features:
                    if plan.features[query].type == "categorical":
                        attended[f"{name}_by_{query}"] = attend(sequence, lengths, pooled[query])
        before_biases = set(_refs(tf.compat.v1.trainable_variables()))
        biases = [
            tf.compat.v1.keras.layers.DenseFeatures([column], name=f"bias_{name}")(features)
            for name, column in sorted(columns.bias.items())
        ]
        bias_tables = {
            v.ref() for v in tf.compat.v1.trainable_variables() if v.ref() not in before_biases
        }
        # The tables, where the model holds them (on CPU); on a TPU they live on the TPU.
        tables = [v for v in tf.compat.v1.trainable_variables() if v.ref() not in before]
        pieces = [pooled[name] for name in sorted(pooled)]
        pieces.extend(shared_table_interactions(plan, pooled))
        pieces.extend(attended[name] for name in sorted(attended))
        for name in plan.numeric_features:
            pieces.append(tf.reshape(features[name], [-1, 1]))
        net = tf.concat(pieces, axis=1)
        # DCN-v2 cross layers: x_{l+1} = x_0 * (W x_l + b) + x_l, explicit feature crosses
        # ahead of the DNN.
        x0 = net
        for i in range(cross_layers):
            width = int(x0.shape[-1])
            net = x0 * tf.compat.v1.layers.dense(net, width, name=f"cross_{i}") + net
        for i, units in enumerate(hidden_units):
            net = tf.compat.v1.layers.dense(net, units, activation=tf.nn.relu, name=f"hidden_{i}")
        # Started from counts, the network's output starts at 0 (a zero kernel): the first
        # prediction is the count's, and the network learns only what improves on it. A
        # random output layer would add a random score per row on top of the count, which
        # costs more than the early steps can win back.
        logits = tf.compat.v1.layers.dense(
            net,
            1,
            name="logits",
            kernel_initializer=tf.compat.v1.zeros_initializer() if bias_initial_values else None,
            bias_initializer=tf.compat.v1.constant_initializer(float(initial_logit)),
        )
        if biases:
            # The scale makes the bias learn faster than the table rate (about id_bias_scale
            # times under Adagrad or Adam, which normalize the gradient's size), the same
            # on CPU and TPU: an item's own rate is one number, quick to learn and the
            # strongest single signal, while the embeddings should move slowly.
            logits = logits + id_bias_scale * tf.add_n(biases)
        logits = tf.reshape(logits, [-1])
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
            # Per categorical feature, which rows carry an OOV id: the model on values it
            # never saw in training.
            unseen = {
                UNSEEN + name: oov_rows(
                    features[bias_feature(name) if name in key_features else name],
                    plan.tables[feature.table].entries,
                )
                for name, feature in sorted(plan.features.items())
                if feature.type == "categorical"
                and (name not in key_features or bias_feature(name) in features)
            }
            return tf.compat.v1.estimator.tpu.TPUEstimatorSpec(
                mode,
                loss=loss,
                eval_metrics=(
                    _metric_fn(binary, sorted(unseen)),
                    {"labels": labels, "logits": logits, **unseen},
                ),
            )

        global_step = tf.compat.v1.train.get_global_step()
        if embedding_l2:
            # An L2 penalty on the looked-up vectors, not on the whole tables: a row is
            # pulled towards 0 in proportion to how often it is seen, the regularization
            # of sparse embeddings that works the same on the TPU (whose tables the model
            # never holds) and on CPU.
            looked_up = [pooled[n] for n in sorted(pooled)] + [id_bias_scale * b for b in biases]
            penalty = tf.add_n([tf.reduce_mean(tf.reduce_sum(v * v, axis=1)) for v in looked_up])
            loss = loss + embedding_l2 * penalty
        if use_tpu:
            opt = tf.compat.v1.tpu.CrossShardOptimizer(_optimizer(optimizer, learning_rate))
            return tf.compat.v1.estimator.tpu.TPUEstimatorSpec(
                mode,
                loss=loss,
                train_op=opt.minimize(loss, global_step=global_step),
                scaffold_fn=lambda: _portable_scaffold(config),
            )
        bias_rate = bias_learning_rate_fn(global_step) if bias_learning_rate_fn else None
        train_op = _train_on_cpu(
            loss, tables, global_step, optimizer, learning_rate, embedding, bias_tables, bias_rate
        )
        from trainer.progress import LOSS

        tf.compat.v1.add_to_collection(LOSS, loss)  # for the progress line (trainer/progress.py)
        hooks = [
            tf.compat.v1.train.LoggingTensorHook(
                {"loss": loss, "step": global_step},
                every_n_iter=LOG_EVERY_N_STEPS,
                formatter=lambda v: f"loss = {v['loss']:.4f}, step = {v['step']}",
            )
        ]  # on a TPU, TPUEstimator logs the loss after each loop itself
        return tf.compat.v1.estimator.tpu.TPUEstimatorSpec(
            mode, loss=loss, train_op=train_op, training_hooks=hooks
        )

    return model_fn


def _refs(variables) -> list:
    return [v.ref() for v in variables]


def _train_on_cpu(
    loss, tables, global_step, optimizer, learning_rate, embedding, bias_tables=(), bias_rate=None
):
    """The CPU train op: the tables by the `[embedding]` optimizer, rate and clipping (as the
    TPU's embedding engine trains them; the bias tables at `bias_rate` if given, as their
    columns' `learning_rate_fn` sets it on a TPU), every other variable by `--optimizer`."""
    table_refs = set(_refs(tables))
    dense_opt = _optimizer(optimizer, learning_rate)
    grads = dense_opt.compute_gradients(loss)
    table_grads = [(_looked_up_rows(g), v) for g, v in grads if v.ref() in table_refs]
    dense_grads = [(g, v) for g, v in grads if v.ref() not in table_refs]
    updates = [dense_opt.apply_gradients(dense_grads)]
    groups = [
        ([(g, v) for g, v in table_grads if v.ref() not in bias_tables], None),
        ([(g, v) for g, v in table_grads if v.ref() in bias_tables], bias_rate),
    ]
    for group, rate in groups:
        if not group:
            continue
        update_tables = cpu_optimizer(embedding, rate).apply_gradients(group)
        with tf.control_dependencies([update_tables]):
            clips = clip_updated_rows(group, embedding)
        updates.append(tf.group(update_tables, *clips))
    # The step moves on after every update: the bias rate reads the step, and an increment
    # free to run beside the table updates made it this step's rate or the next one's by
    # thread timing, so the same seed trained a slightly different model now and then.
    with tf.control_dependencies(updates):
        return tf.compat.v1.assign_add(global_step, 1).op


def _looked_up_rows(grad):
    """A table's gradient restricted to the rows the batch looked up, as the TPU updates them.

    TensorFlow's CPU lookup (`safe_embedding_lookup_sparse`) fills empty sequence positions
    with id 0 at weight 0, so row 0 gets a zero gradient in every batch: left in, the CPU
    would decay its Adam moments and clip it when the TPU does not touch it. Repeated ids
    are summed first; a row whose summed gradient is exactly zero counts as not looked up.
    """
    if not isinstance(grad, tf.IndexedSlices):
        return grad
    rows, position = tf.unique(grad.indices)
    summed = tf.math.unsorted_segment_sum(grad.values, position, tf.size(rows))
    nonzero = tf.reduce_any(tf.math.not_equal(summed, 0), axis=1)
    return tf.IndexedSlices(
        tf.boolean_mask(summed, nonzero), tf.boolean_mask(rows, nonzero), grad.dense_shape
    )


def _portable_scaffold(config) -> tf.compat.v1.train.Scaffold:
    """The TPU training scaffold whose checkpoints hold exactly what a CPU checkpoint holds.

    The dense optimizer's slots of TPUEstimator's dummy table variables are left out of the
    checkpoint and initialized at every session start (the dummy tables only route
    gradients; their slots carry no model state). Without this a CPU checkpoint cannot be
    restored on a TPU (the slots are missing from it) and a TPU checkpoint carries state the
    CPU has no variable for.
    """
    variables = tf.compat.v1.global_variables()
    dummies = [v for v in variables if v.op.name.startswith(TPU_DUMMY_TABLE_PREFIX)]
    dummy_refs = set(_refs(dummies))
    saved = [v for v in variables if v.ref() not in dummy_refs]
    return tf.compat.v1.train.Scaffold(
        saver=tf.compat.v1.train.Saver(
            saved,
            sharded=True,
            max_to_keep=config.keep_checkpoint_max,
            keep_checkpoint_every_n_hours=config.keep_checkpoint_every_n_hours,
            save_relative_paths=True,
        ),
        ready_for_local_init_op=tf.compat.v1.report_uninitialized_variables(saved),
        local_init_op=tf.group(
            tf.compat.v1.train.Scaffold.default_local_init_op(),
            tf.compat.v1.variables_initializer(dummies),
        ),
    )


def _metric_fn(binary: bool, categorical: Sequence[str] = ()):
    def metric_fn(labels, logits, **unseen):
        metrics = {EXAMPLES: _count(labels)}
        # The loss of every row, averaged over the rows (not over the batches).
        if binary:
            per_row = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
        else:
            per_row = tf.math.squared_difference(labels, logits)
        metrics[EXAMPLE_LOSS] = tf.compat.v1.metrics.mean(per_row)
        if binary:
            probabilities = tf.sigmoid(logits)
            # The class counts say whether an AUC is defined at all (trainer.metrics): the
            # streaming AUC reports 1.0 or 0.0 for rows of one class.
            positive = tf.cast(tf.math.greater(labels, 0.5), tf.int64)
            metrics["positives"] = _sum(positive, "positives_count")
            metrics["auc"] = _defined_auc(
                tf.compat.v1.metrics.auc(labels, probabilities, num_thresholds=AUC_THRESHOLDS),
                metrics["positives"][0],
                metrics[EXAMPLES][0],
            )
            for key in categorical:
                # AUC and counts of the rows whose feature is out of vocabulary.
                name = key[len(UNSEEN) :]
                in_slice = tf.cast(unseen[key], tf.int64)
                metrics[f"examples_unseen_{name}"] = _sum(in_slice, f"examples_unseen_{name}")
                metrics[f"positives_unseen_{name}"] = _sum(
                    in_slice * positive, f"positives_unseen_{name}"
                )
                metrics[f"auc_unseen_{name}"] = _defined_auc(
                    tf.compat.v1.metrics.auc(
                        labels, probabilities, weights=unseen[key], num_thresholds=AUC_THRESHOLDS
                    ),
                    metrics[f"positives_unseen_{name}"][0],
                    metrics[f"examples_unseen_{name}"][0],
                )
            metrics["accuracy"] = tf.compat.v1.metrics.accuracy(
                labels, tf.cast(tf.math.greater(probabilities, 0.5), tf.float32)
            )
        else:
            metrics["rmse"] = tf.compat.v1.metrics.root_mean_squared_error(labels, logits)
        return metrics

    return metric_fn


def _defined_auc(auc, positives: tf.Tensor, examples: tf.Tensor):
    """The streaming AUC, NaN while its rows lack a class: TensorFlow's says 1.0 or 0.0
    there, and the estimator writes the value to TensorBoard as well as returning it
    (`trainer.metrics` turns the NaN into null with its reason)."""
    value, update = auc
    defined = tf.math.logical_and(
        tf.math.greater(positives, 0), tf.math.greater(examples - positives, 0)
    )
    return tf.where(defined, value, tf.constant(float("nan"), value.dtype)), update


def _count(labels: tf.Tensor):
    """A streaming metric: the number of examples evaluated."""
    return _sum(tf.ones_like(labels, tf.int64), "examples_count")


def _sum(values: tf.Tensor, name: str):
    """A streaming metric: the sum of int64 `values` over the evaluation."""
    total = tf.compat.v1.Variable(
        0,
        dtype=tf.int64,
        trainable=False,
        collections=[
            tf.compat.v1.GraphKeys.LOCAL_VARIABLES,
            tf.compat.v1.GraphKeys.METRIC_VARIABLES,
        ],
        name=name,
    )
    update = total.assign_add(tf.reduce_sum(values))
    return total.read_value(), update
