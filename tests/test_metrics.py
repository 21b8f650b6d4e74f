"""Evaluation figures only where they are defined: pure checks of trainer.metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer import metrics


def _raw(examples, positives, auc, **extra):
    return {
        "examples": np.int64(examples),
        "positives": np.int64(positives),
        "auc": np.float32(auc),
        "loss": np.float32(0.5),
        "global_step": np.int64(100),
        **extra,
    }


@pytest.mark.parametrize(
    ("examples", "positives", "tf_auc"),
    [(411, 0, 1.0), (411, 411, 0.0), (1, 1, 0.99999)],
)
def test_an_auc_of_one_class_is_none_with_its_reason(examples, positives, tf_auc):
    result = metrics.finalize(_raw(examples, positives, tf_auc), binary=True)
    assert result["auc"] is None
    assert "both classes" in result["undefined"]["auc"]
    assert (result["positives"], result["negatives"]) == (positives, examples - positives)
    # Strict JSON: no NaN, no invented figure.
    json.dumps(result, allow_nan=False)
    assert "AUC undefined" in metrics.describe_split("eval", result)


def test_a_defined_auc_is_kept_and_a_small_split_is_said():
    result = metrics.finalize(_raw(100, 10, 0.75), binary=True)
    assert result["auc"] == pytest.approx(0.75)
    assert "undefined" not in result
    assert metrics.too_small(result)
    assert "too few" in metrics.describe_split("validation", result)
    big = metrics.finalize(_raw(1000, 400, 0.75), binary=True)
    assert not metrics.too_small(big)
    assert (
        metrics.describe_split("eval", big) == "eval split: 1,000 rows, 400 positive, 600 negative"
    )


def test_slices_without_rows_or_of_one_class_have_no_auc():
    raw = _raw(
        1000,
        400,
        0.7,
        auc_unseen_device=np.float32(0.0),
        examples_unseen_device=np.int64(0),
        positives_unseen_device=np.int64(0),
        auc_unseen_region=np.float32(1.0),
        examples_unseen_region=np.int64(7),
        positives_unseen_region=np.int64(0),
        auc_unseen_item=np.float32(0.61),
        examples_unseen_item=np.int64(50),
        positives_unseen_item=np.int64(20),
    )
    result = metrics.finalize(raw, binary=True)
    assert (
        result["auc_unseen_device"] is None
        and "no rows" in result["undefined"]["auc_unseen_device"]
    )
    assert result["auc_unseen_region"] is None
    assert result["auc_unseen_item"] == pytest.approx(0.61)
    assert (result["positives_unseen_item"], result["negatives_unseen_item"]) == (20, 30)
    json.dumps(result, allow_nan=False)


def test_an_empty_split_keeps_only_its_count_and_a_nan_loss_is_none():
    assert metrics.finalize(_raw(0, 0, 0.0), binary=True) == {"examples": 0, "global_step": 100}
    diverged = metrics.finalize({**_raw(100, 50, 0.5), "loss": np.float32("nan")}, binary=True)
    assert diverged["loss"] is None and "loss" in diverged["undefined"]
    regression = metrics.finalize(
        {"examples": np.int64(5), "rmse": np.float32(1.5), "loss": np.float32(2.25)}, binary=False
    )
    assert regression == {"examples": 5, "rmse": 1.5, "loss": 2.25}


def test_the_loss_reported_is_the_mean_over_rows_not_the_estimators():
    raw = {"examples": np.int64(5), "rmse": np.float32(1.5), "loss": np.float32(2.5)}
    figures = metrics.finalize({**raw, "loss_over_examples": np.float32(2.25)}, binary=False)
    assert figures == {"examples": 5, "rmse": 1.5, "loss": 2.25}


def test_only_finite_numbers_rank():
    assert metrics.rankable(0.7) and metrics.rankable(1)
    assert not any(metrics.rankable(v) for v in (None, float("nan"), float("inf"), True))


def test_a_split_evaluated_in_part_says_so():
    figures = metrics.finalize(_raw(256, 120, 0.5), binary=True)
    assert metrics.describe_split("eval", figures, partial=True).startswith(
        "eval split, the part evaluated (--eval-steps): 256 rows, 120 positive, 136 negative"
    )
    assert metrics.describe_split("eval", figures).startswith("eval split: 256 rows")
