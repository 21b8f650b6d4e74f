"""Evaluation figures as they are reported: only where they are defined, never invented.

TensorFlow's streaming AUC answers for any input: 1.0 or 0.0 for a split of one class, about
1.0 for one row, 0.0 for no rows. None of these is a measurement. Here every evaluation result
goes through `finalize`, which keeps a figure only where its definition holds (an AUC needs
both classes among the rows it ranks), puts `None` in its place otherwise and says why under
`undefined`, so that `eval_metrics.json` never carries a number that was not measured and
selection never ranks on one. Pure Python: tested without TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

EXAMPLES = "examples"
POSITIVES = "positives"
NEGATIVES = "negatives"
UNDEFINED = "undefined"
"""metric -> why it is None: the key beside the figures that explains each missing one."""
AUC = "auc"
LOSS = "loss"
EXAMPLE_LOSS = "loss_over_examples"
"""The mean loss over the evaluated rows (`trainer.model`), reported as `loss`: the
estimator's own `loss` is the mean of each batch's mean, so a last, partial batch weighed as
much as a whole one."""
UNSEEN_EXAMPLES = "examples_unseen_"
UNSEEN_POSITIVES = "positives_unseen_"
UNSEEN_AUC = "auc_unseen_"
MIN_CLASS_ROWS = 30
AUC_THRESHOLDS = 10_000
"""Buckets of TensorFlow's streaming AUC (`trainer.model`). Predictions that fall into one
bucket count as tied, which pulls the AUC below the exact one when predictions crowd
together, as those of a model that starts from a count do; the baselines' AUC is exact
(`trainer.baselines`)."""
RMSE_TOLERANCE = 1e-5
"""The relative difference below which the model's RMSE (float32, streaming) and the
baseline's (float64, exact) count as equal: the same predictions read apart in the last
float32 bits."""
AUC_TOLERANCE = 1.0 / AUC_THRESHOLDS
"""How far below an exact AUC the streaming AUC of the same ranking may read: a model that
ranks as a baseline does is judged equal to it, not worse."""
"""Fewer rows than this of either class make an AUC too noisy to judge a model by (its
standard error is then several hundredths); it is reported, with a warning."""


def _plain(value: Any) -> Any:
    """A numpy scalar as a Python number; NaN and infinities as None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def class_counts(positives: int, examples: int) -> tuple[int, int]:
    return int(positives), int(examples) - int(positives)


def auc_undefined(positives: int, negatives: int) -> str | None:
    """Why an AUC over these rows is not defined, or None when it is."""
    if positives + negatives == 0:
        return "no rows"
    if not positives:
        return f"all {negatives} rows are negative (label 0): an AUC needs both classes"
    if not negatives:
        return f"all {positives} rows are positive (label 1): an AUC needs both classes"
    return None


def finalize(raw: Mapping[str, Any], binary: bool) -> dict[str, Any]:
    """An estimator's evaluation as JSON values, with each undefined figure None.

    Args:
      raw: what `Estimator.evaluate` returned (numpy values): `examples`, `loss`, and for a
        binary label `auc`, `positives` and per categorical feature `auc_unseen_<f>`,
        `examples_unseen_<f>`, `positives_unseen_<f>`.
      binary: whether the label is binary.

    Returns:
      The figures, plus `negatives` for a binary label and `undefined` (metric -> reason)
      when any figure is None. A split of no rows keeps only its count and step: a loss or an
      accuracy over nothing is not a figure either.
    """
    values = {k: _plain(v) for k, v in raw.items()}
    if EXAMPLE_LOSS in values:
        values[LOSS] = values.pop(EXAMPLE_LOSS)
    undefined: dict[str, str] = {}
    examples = int(values.get(EXAMPLES) or 0)
    if not examples:
        kept = {EXAMPLES: 0}
        if "global_step" in values:
            kept["global_step"] = values["global_step"]
        return kept
    if binary and POSITIVES in values:
        positives, negatives = class_counts(values[POSITIVES], examples)
        values[POSITIVES], values[NEGATIVES] = positives, negatives
        reason = auc_undefined(positives, negatives)
        if reason:
            values[AUC] = None
            undefined[AUC] = reason
        for key in [k for k in values if k.startswith(UNSEEN_EXAMPLES)]:
            name = key[len(UNSEEN_EXAMPLES) :]
            rows = int(values[key] or 0)
            slice_positives = int(values.pop(UNSEEN_POSITIVES + name, 0) or 0)
            slice_reason = auc_undefined(slice_positives, rows - slice_positives)
            if slice_reason:
                values[UNSEEN_AUC + name] = None
                undefined[UNSEEN_AUC + name] = f"{name} out of vocabulary: {slice_reason}"
            else:
                values[f"negatives_unseen_{name}"] = rows - slice_positives
                values[UNSEEN_POSITIVES + name] = slice_positives
    for key, value in list(values.items()):
        if value is None and key not in undefined:
            undefined[key] = "not a finite number (the loss diverged or no row counted)"
    if undefined:
        values[UNDEFINED] = undefined
    return values


def too_small(metrics: Mapping[str, Any]) -> bool:
    """Whether a binary split has fewer than MIN_CLASS_ROWS rows of either class."""
    if POSITIVES not in metrics:
        return False
    return min(metrics[POSITIVES], metrics[NEGATIVES]) < MIN_CLASS_ROWS


def describe_split(name: str, metrics: Mapping[str, Any], partial: bool = False) -> str:
    """One line on a split's rows and whether its AUC can judge a model, e.g. "eval split:
    411 rows, 0 positive, 411 negative: AUC undefined (an AUC needs both classes)";
    `partial`: only part of the split was evaluated (--eval-steps), and the line says so."""
    examples = int(metrics.get(EXAMPLES) or 0)
    split = f"{name} split" + (", the part evaluated (--eval-steps)" if partial else "")
    if not examples:
        return f"{split}: no rows; nothing was evaluated on it"
    if POSITIVES not in metrics:
        return f"{split}: {examples:,} rows"
    head = (
        f"{split}: {examples:,} rows, {metrics[POSITIVES]:,} positive, "
        f"{metrics[NEGATIVES]:,} negative"
    )
    reason = (metrics.get(UNDEFINED) or {}).get(AUC)
    if reason:
        return f"{head}: AUC undefined ({reason})"
    if too_small(metrics):
        return (
            f"{head}: too few of one class (< {MIN_CLASS_ROWS}) for its AUC to judge a model; "
            "add rows to the split"
        )
    return head


def rankable(value: Any) -> bool:
    """Whether a figure can rank checkpoints: a finite number."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """The standard error of an AUC over `positives` and `negatives` rows (Hanley and McNeil,
    1982); 0 without rows of both classes."""
    if positives < 1 or negatives < 1:
        return 0.0
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    ) / (positives * negatives)
    return math.sqrt(max(variance, 0.0))
