"""The model's starting point: where counting ends, or where a linear model ends.

`measure_and_start` counts the training split once, measures the single-feature baselines
on eval and validation, and gives the bias tables their initial rows: the counting start
(`baselines.initial_biases`) or, where validation shows it better beyond chance, the linear
start (`trainer.linear`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer import linear
from trainer.baselines import (
    Sums,
    categorical_features,
    initial_biases,
    leave_one_out_best,
    measure,
    smoothed_rates,
    split_sums,
)
from trainer.selection import LINEAR_START


def measure_and_start(run: Any, scale: float | None) -> tuple[dict, dict, tuple]:
    """A training run's baselines and starting point, from one count of the train split.

    Args:
      run: the run's inputs (`trainer.prepare.RunInputs`).
      scale: the factor on the bias in the model's logit; None: no start from counts.

    Returns:
      (the baselines on eval, none without eval rows; the baselines on validation, none
      without it; `initial_biases` of the split key and of the best single feature on
      validation, or ({}, 0.0) without `scale`). Counting ends at the best single feature:
      summing every feature's log-odds would also add those whose rates only tell apart the
      few keys behind each value (an occupation's rate is its users' generosity), which do
      not carry over to unseen keys.
    """
    plan = run.plan
    train = split_sums(run.train_files, plan) if categorical_features(plan) else {}
    on_eval = measure(run.train_files, run.eval_files, plan, train) if run.eval_rows else {}
    validation = run.validation_files
    on_validation = measure(run.train_files, validation, plan, train) if validation else {}
    if scale is None:
        return on_eval, on_validation, ({}, 0.0)
    # No best feature where validation ranks none (rows of one class): the key's alone.
    # Without a validation split, the best by leave-one-out on the training split.
    best = [on_validation["best_baseline"]] if on_validation.get("best_baseline") else []
    if not validation and train:
        candidates = [n for n in categorical_features(plan) if n not in run.key_features]
        best = [leave_one_out_best(train, candidates, plan)] if candidates else []
        best = [b for b in best if b is not None]
    start = initial_biases(train, plan, scale, [*run.key_features, *best])
    linear = _linear_start(run, train, best, scale)
    if linear is not None:
        on_validation[LINEAR_START] = {k: v for k, v in linear.items() if k != "values"}
        if linear["chosen"]:
            start = linear["values"]
    return on_eval, on_validation, start


def _linear_start(
    run: Any, train: dict[str, Sums], best: list, scale: float
) -> dict[str, Any] | None:
    """`trainer.linear.choose_start` for a binary label with a split key and a validation
    split, with the start it gives as `values` (`initial_biases`' form) where chosen."""
    plan = run.plan
    if plan.label["type"] != "binary" or len(run.key_features) != 1 or not best:
        return None
    key, feature = run.key_features[0], best[0]
    tables = {n: plan.features[n].table for n in (key, feature)}
    if key == feature or tables[key] == tables[feature]:
        return None
    sums = train[feature]
    counted = smoothed_rates(sums, float(sums.labels.sum() / max(sums.rows.sum(), 1.0)))
    validation = split_sums(run.validation_files, plan, [feature])[feature]
    size = int(plan.tables[tables[feature]].vocabulary_size)
    validation = Sums(*(a[:size] for a in (validation.rows, validation.labels, validation.squares)))
    chosen = linear.choose_start(run.train_files, plan, key, feature, counted[:size], validation)
    if chosen is None:
        return None
    if chosen["chosen"]:
        weights = chosen.pop("weights")
        values = {tables[n]: (w / scale).astype(np.float32) for n, w in weights.items()}
        chosen["values"] = (values, float(chosen.pop("intercept")))
    return chosen
