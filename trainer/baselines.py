"""Single-feature baselines: what counting alone scores on the eval split.

For every categorical feature, the training split gives each value (id) a score: its
smoothed label rate, (sum of labels + SMOOTHING * prior) / (rows + SMOOTHING), where the prior
is the label mean of the training split. Ranking the eval rows by that score is the feature's
"popularity" baseline: for a binary label its AUC, for regression the RMSE of the per-value
mean (next to the RMSE of the training mean alone). A model that loses to the best of them
has learned less than a count of one column.

Both passes run on tf.data over the transformed TFRecords: the ids are already integers, so
each pass keeps, per feature, a few arrays of the vocabulary's size (label sums, row counts
and squared-label sums per id) and adds every batch into them with a segment sum. Memory is
O(vocabulary), never O(rows), and the AUC is exact: every eval row of one id gets the same
score, so the eval rows' positives and negatives per id are all the ROC curve needs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from common.plan import EmbeddingPlan
from trainer.metrics import AUC_TOLERANCE, RMSE_TOLERANCE, auc_undefined

LOG = logging.getLogger("trainer")

# Pseudo-rows of the prior mixed into every value's rate: a value seen twice with two clicks
# is not a sure click.
SMOOTHING = 10.0
BATCH = 4096


@dataclasses.dataclass
class Sums:
    """Per-id sums of one feature over a split; the last slot holds rows without an id.

    Attributes:
      rows: rows per id.
      labels: label sum per id.
      squares: squared-label sum per id.
    """

    rows: np.ndarray
    labels: np.ndarray
    squares: np.ndarray


def categorical_features(plan: EmbeddingPlan) -> list[str]:
    """The plan's one-id-a-row features, the ones a per-value rate is defined for."""
    return sorted(name for name, f in plan.features.items() if f.type == "categorical")


def _first_id(ids: tf.SparseTensor, size: int) -> tf.Tensor:
    """One id a row, the slot `size` for a row without one (or with an id outside the
    table, e.g. negative: a value outside a vocabulary without OOV buckets)."""
    batch = ids.dense_shape[0]
    first = tf.math.unsorted_segment_min(ids.values, ids.indices[:, 0], batch)
    valid = tf.math.logical_and(
        tf.math.greater_equal(first, 0), tf.math.less(first, tf.constant(size, tf.int64))
    )
    return tf.where(valid, first, tf.constant(size, tf.int64))


def table_sizes(plan: EmbeddingPlan, features: Sequence[str]) -> dict[str, int]:
    """Each feature's table size (its vocabulary and OOV buckets)."""
    return {n: int(plan.tables[plan.features[n].table].vocabulary_size) for n in features}


def parsed_batches(
    files: Sequence[str], plan: EmbeddingPlan, features: Sequence[str], rows: int = -1
) -> tf.data.Dataset:
    """Batches of `features` (int64 ids, sparse) and the label of the first `rows` rows of
    gzip TFRecords of transformed tf.Examples (-1: all)."""
    spec = {n: tf.io.VarLenFeature(tf.int64) for n in features}
    spec[plan.label["name"]] = tf.io.FixedLenFeature([], tf.float32)
    return (
        tf.data.TFRecordDataset(list(files), compression_type="GZIP")
        .take(rows)
        .batch(BATCH)
        .map(lambda s: tf.io.parse_example(s, spec), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def split_sums(
    files: Sequence[str], plan: EmbeddingPlan, features: Sequence[str] | None = None
) -> dict[str, Sums]:
    """Per-id row counts, label sums and squared-label sums of each feature over `files`.

    Args:
      files: gzip TFRecords of transformed tf.Examples (one split).
      plan: the embedding plan: feature -> table -> vocabulary size.
      features: the features to count (default: every categorical feature).

    Returns:
      feature -> Sums, arrays of vocabulary size + 1 (the last slot: rows without an id).
    """
    features = list(categorical_features(plan) if features is None else features)
    label = plan.label["name"]
    sizes = table_sizes(plan, features)
    dataset = parsed_batches(files, plan, features)
    # float64: sums of millions of labels stay exact to the last row.
    initial = {n: tuple(tf.zeros([sizes[n] + 1], tf.float64) for _ in range(3)) for n in features}

    def add(state, batch):
        y = tf.cast(batch[label], tf.float64)
        new = {}
        for n in features:
            ids = _first_id(batch[n], sizes[n])
            rows, labels, squares = state[n]
            slots = sizes[n] + 1
            new[n] = (
                rows + tf.math.unsorted_segment_sum(tf.ones_like(y), ids, slots),
                labels + tf.math.unsorted_segment_sum(y, ids, slots),
                squares + tf.math.unsorted_segment_sum(y * y, ids, slots),
            )
        return new

    result = dataset.reduce(initial, add)
    return {n: Sums(*(t.numpy() for t in result[n])) for n in features}


def smoothed_rates(sums: Sums, prior: float, smoothing: float = SMOOTHING) -> np.ndarray:
    """Each id's label mean, pulled towards `prior` by `smoothing` pseudo-rows; an id never
    seen in training gets the prior."""
    return (sums.labels + smoothing * prior) / (sums.rows + smoothing)


def initial_biases(
    train: dict[str, Sums],
    plan: EmbeddingPlan,
    scale: float = 1.0,
    features: Sequence[str] | None = None,
) -> tuple[dict[str, np.ndarray], float]:
    """Where counting ends, as the model's starting point: each bias table's initial rows and
    the output layer's initial bias.

    For a binary label a row starts at its id's smoothed log-odds minus the prior's
    (log(r / (1 - r)) - log(p / (1 - p)), `smoothed_rates`), for regression at its id's
    smoothed mean minus the prior; an id never seen in training starts at 0. The output bias
    is the prior's log-odds (or the mean). A table shared by several categorical features
    counts their rows together. Each row is divided by `scale`, the factor the model puts on
    its bias in the logit (`--id-bias-scale`).

    Args:
      train: per-feature sums over the training split (`split_sums`).
      plan: the embedding plan.
      scale: the factor on the bias in the model's logit.
      features: the features whose counts the model starts from (default: every counted
        categorical feature); the others' tables start at 0.

    Returns:
      (table -> initial values, one per bucket; the initial logit). Tables of no counted
      categorical feature, and every table when the split has no rows, are left out.
    """
    counted = [n for n in categorical_features(plan) if n in train]
    if not counted or not train[counted[0]].rows.sum():
        return {}, 0.0
    first = train[counted[0]]
    if features is not None:
        counted = [n for n in counted if n in features]
    prior = float(first.labels.sum() / first.rows.sum())
    binary = plan.label["type"] == "binary"
    if binary:
        prior = min(max(prior, 1e-6), 1 - 1e-6)
    offset = float(np.log(prior / (1 - prior))) if binary else prior
    tables: dict[str, Sums] = {}
    for name in counted:
        table = plan.features[name].table
        size = int(plan.tables[table].vocabulary_size)
        sums = train[name]
        part = Sums(sums.rows[:size], sums.labels[:size], sums.squares[:size])
        if table in tables:
            old = tables[table]
            part = Sums(old.rows + part.rows, old.labels + part.labels, old.squares + part.squares)
        tables[table] = part
    result = {}
    for table, sums in tables.items():
        rates = smoothed_rates(sums, prior)
        if binary:
            rates = np.clip(rates, 1e-6, 1 - 1e-6)
            values = np.log(rates / (1 - rates)) - offset
        else:
            values = rates - prior
        result[table] = (values / scale).astype(np.float32)
    return result, offset


def leave_one_out_best(
    train: dict[str, Sums], features: Sequence[str], plan: EmbeddingPlan
) -> str | None:
    """The feature whose counts best score the training rows each left out of its own id's
    count (target encoding's leave-one-out): an honest ranking of the features without a
    held-out split, in which an id seen once tells nothing. By AUC for a binary label, RMSE
    for regression; None where no feature's figure is defined."""
    binary = plan.label["type"] == "binary"
    scored = {}
    for name in features:
        sums = train[name]
        rows, labels, squares = sums.rows[:-1], sums.labels[:-1], sums.squares[:-1]
        prior = float(sums.labels.sum() / max(sums.rows.sum(), 1.0))
        # A row's own id, less the row: (label sum - y + SMOOTHING * prior) / (rows - 1 + s).
        scale = 1.0 / np.maximum(rows - 1 + SMOOTHING, 1e-12)
        rest = (labels + SMOOTHING * prior) * scale
        if binary:
            # Positives read (sum - 1 + s p) / (n - 1 + s), negatives (sum + s p) / (n - 1 + s).
            scores = np.concatenate([rest - scale, rest])
            positives = np.concatenate([labels, np.zeros_like(labels)])
            negatives = np.concatenate([np.zeros_like(labels), rows - labels])
            value = grouped_auc(scores, positives, negatives)
        else:
            # Prediction rest - scale * y: the squared errors sum from the per-id sums.
            a = 1.0 + scale
            error = a * a * squares - 2 * a * rest * labels + rest * rest * rows
            value = float(np.sqrt(max(error.sum(), 0.0) / max(rows.sum(), 1.0)))
        if value is not None and np.isfinite(value):
            scored[name] = value
    if not scored:
        return None
    return (max if binary else min)(scored, key=scored.get)


def grouped_auc(scores: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> float | None:
    """The exact ROC AUC of rows grouped by score: group i has `positives[i]` positive and
    `negatives[i]` negative rows, all scored `scores[i]`. Ties count one half, as in the
    Mann-Whitney statistic. None when a class is absent: no AUC is defined then."""
    order = np.argsort(scores, kind="stable")
    s, p, n = scores[order], positives[order], negatives[order]
    # Groups of equal scores: ties within a group count half.
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    p, n = np.add.reduceat(p, starts), np.add.reduceat(n, starts)
    total_p, total_n = p.sum(), n.sum()
    if total_p == 0 or total_n == 0:
        return None
    below = np.cumsum(n) - n
    return float(np.sum(p * (below + 0.5 * n)) / (total_p * total_n))


def measure(
    train_files: Sequence[str],
    eval_files: Sequence[str],
    plan: EmbeddingPlan,
    train: dict[str, Sums] | None = None,
) -> dict[str, Any]:
    """The single-feature baselines on `eval_files`, scored from `train_files` (or from
    their sums `train`, when already counted).

    Returns:
      For a binary label: `baseline_auc_<feature>` per categorical feature, and
      `best_baseline` (the feature) with `best_baseline_auc`. For regression:
      `baseline_rmse_mean` (the training mean predicted for every row),
      `baseline_rmse_<feature>` (the feature's smoothed per-value mean), `best_baseline` and
      `best_baseline_rmse`. Empty when an eval or train split has no rows.
    """
    features = categorical_features(plan)
    if train is None:
        train = split_sums(train_files, plan, features) if features else {}
    held_out = split_sums(eval_files, plan, features) if features else {}
    if not features:
        return {}
    first = train[features[0]]
    train_rows, eval_rows = first.rows.sum(), held_out[features[0]].rows.sum()
    if not train_rows or not eval_rows:
        return {}
    prior = float(first.labels.sum() / train_rows)
    binary = plan.label["type"] == "binary"
    result: dict[str, Any] = {}
    if binary:
        for n in features:
            e = held_out[n]
            result[f"baseline_auc_{n}"] = grouped_auc(
                smoothed_rates(train[n], prior), e.labels, e.rows - e.labels
            )
        scored = {n: v for n in features if (v := result[f"baseline_auc_{n}"]) is not None}
        if not scored:
            # Eval rows of one class: no baseline AUC exists, and none is invented.
            positives = float(held_out[features[0]].labels.sum())
            reason = auc_undefined(int(positives), int(eval_rows - positives))
            result["best_baseline"] = None
            result["best_baseline_auc"] = None
            result["baselines_undefined"] = f"eval split: {reason}"
            return result
        best = max(scored, key=scored.get)
        result["best_baseline"] = best
        result["best_baseline_auc"] = scored[best]
        return result
    e = held_out[features[0]]
    result["baseline_rmse_mean"] = _rmse(e, np.full(e.rows.shape, prior))
    for n in features:
        result[f"baseline_rmse_{n}"] = _rmse(held_out[n], smoothed_rates(train[n], prior))
    scored = {n: result[f"baseline_rmse_{n}"] for n in features}
    best = min(scored, key=scored.get)
    result["best_baseline"] = best
    result["best_baseline_rmse"] = scored[best]
    return result


def _rmse(sums: Sums, predicted: np.ndarray) -> float:
    """RMSE of predicting `predicted[id]` for every row of each id, from per-id sums:
    sum (y - m)^2 = sum y^2 - 2 m sum y + m^2 rows."""
    squared = sums.squares - 2 * predicted * sums.labels + predicted**2 * sums.rows
    return float(np.sqrt(max(squared.sum(), 0.0) / sums.rows.sum()))


def summary(metrics: dict[str, Any]) -> str:
    """One line: the model against its best baseline, e.g. "model AUC 0.7200; best single
    feature item_id 0.7000 (+0.0200)". Empty without baselines or a model figure."""
    best = metrics.get("best_baseline")
    for key, name in (("auc", "AUC"), ("rmse", "RMSE")):
        if best is None or metrics.get(key) is None or metrics.get(f"best_baseline_{key}") is None:
            continue
        model, base = float(metrics[key]), float(metrics[f"best_baseline_{key}"])
        line = (
            f"model {name} {model:.4f}; best single feature {best} {base:.4f} ({model - base:+.4f})"
        )
        if key == "rmse":
            line += f"; the training mean alone {float(metrics['baseline_rmse_mean']):.4f}"
        return line
    return ""


def model_loses(metrics: dict[str, Any]) -> bool:
    """Whether the model scores worse than its best single-feature baseline (False where
    either figure is undefined: nothing was compared). The model's streaming AUC of the
    baseline's own ranking may read up to AUC_TOLERANCE below the exact one, its float32
    RMSE RMSE_TOLERANCE above the exact one: equal."""
    if metrics.get("auc") is not None and metrics.get("best_baseline_auc") is not None:
        return float(metrics["auc"]) < float(metrics["best_baseline_auc"]) - AUC_TOLERANCE
    if metrics.get("rmse") is not None and metrics.get("best_baseline_rmse") is not None:
        base = float(metrics["best_baseline_rmse"])
        return float(metrics["rmse"]) > base * (1 + RMSE_TOLERANCE)
    return False
