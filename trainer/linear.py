"""The linear start: a logistic regression on the split key and the best single feature.

Counting rates each id by its own rows. Where the split key (a user) has effects of its own
(some users like everything), the ids a generous user rated look better than they are; a
logistic regression with a term per key and a term per id separates the two, and its id terms
rank unseen keys' rows better than the counts do. It is the practitioner's tuned linear
model, fitted here on the training split by block Newton steps (the key's terms, then the
feature's, each a closed-form step per id), its L2 weights chosen on the validation split.

It replaces the counting start only where validation shows it better beyond chance: a paired
test of the two rankings' AUC on the validation rows (DeLong's, exact here because both
scores are functions of the feature's id), at a family-wise 5% over the candidates tried.
So on data where a per-key term tells nothing (or too few validation rows to tell), the model
keeps starting where counting ends.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from common.plan import EmbeddingPlan
from trainer.baselines import Sums, _first_id, grouped_auc, parsed_batches, table_sizes

LOG = logging.getLogger("trainer")

MAX_ROWS = 2_000_000
"""Training rows the fit reads (the first ones of the split): enough to rank ids, and memory
stays bounded on any split."""
L2_KEY = (1.0, 3.0, 10.0)
L2_FEATURE = (0.3, 1.0, 3.0)
ITERATIONS = 50
TOLERANCE = 1e-5
FAMILY_ERROR = 0.05
"""The chance, over all candidates tried, that a linear start replaces counting on
validation rows where it is not better."""


def read_ids(
    files: Sequence[str], plan: EmbeddingPlan, features: Sequence[str], max_rows: int = MAX_ROWS
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The first id of each of `features` and the label, of the first `max_rows` rows of
    `files` (an id outside its table: the slot vocabulary_size)."""
    label = plan.label["name"]
    sizes = table_sizes(plan, features)
    dataset = parsed_batches(files, plan, features, max_rows).map(
        lambda b: ({n: _first_id(b[n], sizes[n]) for n in features}, b[label])
    )
    ids: dict[str, list] = {n: [] for n in features}
    labels = []
    for batch_ids, batch_labels in dataset.as_numpy_iterator():
        for n in features:
            ids[n].append(batch_ids[n])
        labels.append(batch_labels)
    if not labels:
        return {n: np.zeros(0, np.int64) for n in features}, np.zeros(0)
    return {n: np.concatenate(v) for n, v in ids.items()}, np.concatenate(labels).astype(float)


def fit(
    ids: Sequence[np.ndarray],
    sizes: Sequence[int],
    labels: np.ndarray,
    l2: Sequence[float],
    iterations: int = ITERATIONS,
) -> tuple[list[np.ndarray], float]:
    """A logistic regression on one-hot ids: logit = intercept + sum_b w_b[ids_b], L2 weight
    `l2[b]` on block b, the intercept unpenalized.

    Block Newton: each pass updates one block at a time, every id by its own Newton step
    (the Hessian of one block is diagonal), then the intercept; it stops when no weight
    moves by more than TOLERANCE.

    Returns:
      (one weight array per block, of its size + 1; the intercept).
    """
    mean = float(np.clip(labels.mean(), 1e-6, 1 - 1e-6))
    intercept = math.log(mean / (1 - mean))
    weights = [np.zeros(size + 1) for size in sizes]

    def logit() -> np.ndarray:
        return intercept + sum(w[i] for w, i in zip(weights, ids, strict=True))

    for _ in range(iterations):
        moved = 0.0
        for block, (w, i, lam) in enumerate(zip(weights, ids, l2, strict=True)):
            p = 1.0 / (1.0 + np.exp(-logit()))
            gradient = np.bincount(i, labels - p, len(w)) - lam * w
            curvature = np.bincount(i, p * (1 - p), len(w)) + lam
            step = gradient / curvature
            weights[block] = w + step
            moved = max(moved, float(np.abs(step).max()))
        p = 1.0 / (1.0 + np.exp(-logit()))
        shift = float((labels - p).sum() / max((p * (1 - p)).sum(), 1e-12))
        intercept += shift
        if max(moved, abs(shift)) < TOLERANCE:
            break
    return weights, intercept


def _placements(scores: np.ndarray, positives: np.ndarray, negatives: np.ndarray):
    """DeLong's placements of grouped rows: per group, the share of negatives ranked below
    its positives and of positives ranked above its negatives (ties count one half)."""
    distinct, group = np.unique(scores, return_inverse=True)
    p = np.bincount(group, positives, len(distinct))
    n = np.bincount(group, negatives, len(distinct))
    below = (np.cumsum(n) - n + 0.5 * n) / n.sum()
    above = (p.sum() - np.cumsum(p) + 0.5 * p) / p.sum()
    return below[group], above[group]


def paired_auc_difference(
    a: np.ndarray, b: np.ndarray, positives: np.ndarray, negatives: np.ndarray
) -> tuple[float, float]:
    """AUC(a) - AUC(b) over the same rows and its standard error (DeLong et al., 1988), for
    rows grouped by id: group i holds `positives[i]` and `negatives[i]` rows, scored a[i] by
    one model and b[i] by the other."""
    m, n = float(positives.sum()), float(negatives.sum())
    a_below, a_above = _placements(a, positives, negatives)
    b_below, b_above = _placements(b, positives, negatives)
    d_below, d_above = a_below - b_below, a_above - b_above
    difference = float((d_below * positives).sum() / m)
    variance = ((d_below - difference) ** 2 * positives).sum() / ((m - 1) * m) + (
        (d_above - difference) ** 2 * negatives
    ).sum() / ((n - 1) * n)
    return difference, float(math.sqrt(max(variance, 0.0)))


def choose_start(
    train_files: Sequence[str],
    plan: EmbeddingPlan,
    key: str,
    feature: str,
    counted: np.ndarray,
    validation: Sums,
) -> dict[str, Any] | None:
    """The linear start where it beats counting on validation beyond chance, else None.

    Args:
      train_files: the training split.
      plan: the embedding plan (binary label).
      key: the split key, a categorical feature the model gives a per-key term.
      feature: the best single feature on validation.
      counted: the feature's per-id counting score (`baselines.smoothed_rates`).
      validation: the feature's per-id sums on the validation split.

    Returns:
      None where nothing could be compared (no training or validation rows of both
      classes); else the figures of the choice (validation AUC of both, z and the z needed,
      the L2 weights) and `chosen`; where chosen, also `weights` (key and feature -> per-id
      log-odds around `intercept`, one per table row).
    """
    ids, labels = read_ids(train_files, plan, [key, feature])
    if not len(labels) or labels.min() == labels.max():
        return None
    sizes = [int(plan.tables[plan.features[n].table].vocabulary_size) for n in (key, feature)]
    positives = validation.labels
    negatives = validation.rows - validation.labels
    count_auc = grouped_auc(counted, positives, negatives)
    if count_auc is None:
        return None
    candidates = [(k, f) for k in L2_KEY for f in L2_FEATURE]
    best = None
    for l2 in candidates:
        (key_w, feature_w), intercept = fit([ids[key], ids[feature]], sizes, labels, l2)
        auc = grouped_auc(feature_w[:-1], positives, negatives)
        if auc is not None and (best is None or auc > best["validation_auc"]):
            best = {"l2": l2, "validation_auc": auc, "key_w": key_w, "feature_w": feature_w,
                    "intercept": intercept}  # fmt: skip
    if best is None:
        return None
    difference, error = paired_auc_difference(best["feature_w"][:-1], counted, positives, negatives)
    needed = NormalDist().inv_cdf(1 - FAMILY_ERROR / len(candidates))
    z = difference / error if error > 0 else 0.0
    figures = {
        "validation_auc": best["validation_auc"],
        "counting_validation_auc": count_auc,
        "z": z,
        "z_needed": needed,
        "l2": {key: best["l2"][0], feature: best["l2"][1]},
    }
    if z <= needed:
        LOG.info(
            "Start: counting (a linear model of %s and %s: validation AUC %+.4f over it, "
            "z %.2f < %.2f)",
            key, feature, difference, z, needed,
        )  # fmt: skip
        return {"chosen": False, **figures}
    LOG.info(
        "Start: a linear model of %s and %s (validation AUC %.4f, counting %.4f, z %.2f)",
        key, feature, best["validation_auc"], count_auc, z,
    )  # fmt: skip
    return {
        "chosen": True,
        "weights": {key: best["key_w"][:-1], feature: best["feature_w"][:-1]},
        "intercept": best["intercept"],
        **figures,
    }
