"""Single-feature baselines over real transformed TFRecords, against a row-by-row reference."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from common.plan import EmbeddingPlan, FeaturePlan, TablePlan
from trainer import baselines

pytestmark = pytest.mark.trainer_env


def _plan(label_type: str = "binary") -> EmbeddingPlan:
    return EmbeddingPlan(
        tables={
            "items": TablePlan("items", ["history", "item_id"], 6, 4, "mean", 5, 1, "auto"),
            "device": TablePlan("device", ["device"], 3, 4, "mean", 3, 0, "auto"),
        },
        features={
            "item_id": FeaturePlan("item_id", "items", "categorical"),
            "history": FeaturePlan("history", "items", "sequence", max_sequence_length=3),
            "device": FeaturePlan("device", "device", "categorical"),
        },
        dropped={},
        numeric_features=[],
        label={"name": "y", "type": label_type},
        length_coverage=0.95,
        notes=[],
    )


def _write(path, rows) -> str:
    """rows: (item_id or None, device, label) as transformed tf.Examples, gzip TFRecords."""
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for item, device, label in rows:
            example = tf.train.Example()
            if item is not None:
                example.features.feature["item_id"].int64_list.value.append(item)
            example.features.feature["history"].int64_list.value.extend([1, 2])
            example.features.feature["device"].int64_list.value.append(device)
            example.features.feature["y"].float_list.value.append(label)
            writer.write(example.SerializeToString())
    return str(path)


def _pairwise_auc(scores, labels) -> float:
    """AUC by comparing every positive with every negative; ties count one half."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def _random_rows(rng, n, item_rate):
    items = rng.integers(0, 6, size=n)  # 5 is the OOV bucket
    devices = rng.integers(0, 3, size=n)
    labels = (rng.random(n) < item_rate[items]).astype(float)
    rows = [(int(i), int(d), float(y)) for i, d, y in zip(items, devices, labels, strict=True)]
    rows[0] = (None, rows[0][1], rows[0][2])  # a row without an item
    return rows


def _reference_scores(train, feature_index, prior):
    """Each value's smoothed rate, computed row by row: the reference."""
    sums, counts = {}, {}
    for row in train:
        value = row[feature_index]
        sums[value] = sums.get(value, 0.0) + row[2]
        counts[value] = counts.get(value, 0) + 1
    k = baselines.SMOOTHING
    return lambda v: (sums.get(v, 0.0) + k * prior) / (counts.get(v, 0) + k)


def test_binary_baselines_match_a_row_by_row_reference(tmp_path):
    rng = np.random.default_rng(3)
    rate = np.array([0.9, 0.7, 0.5, 0.3, 0.1, 0.5])
    train, held_out = _random_rows(rng, 700, rate), _random_rows(rng, 300, rate)
    files = [
        _write(tmp_path / "train-0.gz", train[:400]),
        _write(tmp_path / "train-1.gz", train[400:]),
    ]
    measured = baselines.measure(files, [_write(tmp_path / "eval.gz", held_out)], _plan())

    prior = np.mean([r[2] for r in train])
    labels = [r[2] for r in held_out]
    for name, index in (("item_id", 0), ("device", 1)):
        score = _reference_scores(train, index, prior)
        expected = _pairwise_auc([score(r[index]) for r in held_out], labels)
        assert measured[f"baseline_auc_{name}"] == pytest.approx(expected, abs=1e-12)
    # The item carries the label, the device does not.
    assert measured["best_baseline"] == "item_id"
    assert measured["best_baseline_auc"] == measured["baseline_auc_item_id"] > 0.7
    assert measured["baseline_auc_device"] < 0.6


def test_regression_baselines_match_a_row_by_row_reference(tmp_path):
    rng = np.random.default_rng(5)
    train = [(int(i), int(i % 3), float(i * 2 + rng.normal())) for i in rng.integers(0, 5, 200)]
    held_out = [(int(i), int(i % 3), float(i * 2 + rng.normal())) for i in rng.integers(0, 5, 80)]
    measured = baselines.measure(
        [_write(tmp_path / "train.gz", train)],
        [_write(tmp_path / "eval.gz", held_out)],
        _plan("regression"),
    )
    prior = np.mean([r[2] for r in train])
    y = np.array([r[2] for r in held_out])
    assert measured["baseline_rmse_mean"] == pytest.approx(np.sqrt(np.mean((y - prior) ** 2)))
    score = _reference_scores(train, 0, prior)
    predicted = np.array([score(r[0]) for r in held_out])
    assert measured["baseline_rmse_item_id"] == pytest.approx(
        np.sqrt(np.mean((y - predicted) ** 2))
    )
    assert measured["best_baseline"] == "item_id"


def test_grouped_auc_is_the_pairwise_auc_with_ties():
    rng = np.random.default_rng(11)
    scores = rng.integers(0, 4, size=50).astype(float)  # many ties
    labels = (rng.random(50) < 0.3 + 0.1 * scores).astype(int)
    values = np.unique(scores)
    positives = np.array([labels[scores == v].sum() for v in values], float)
    negatives = np.array([(1 - labels[scores == v]).sum() for v in values], float)
    # Groups given in a shuffled order, one value split over two groups.
    order = rng.permutation(len(values))
    split = np.r_[values[order], values[order][:1]]
    p = np.r_[positives[order], [0.0]]
    n = np.r_[negatives[order], [0.0]]
    p[0], p[-1] = positives[order][0] // 2, positives[order][0] - positives[order][0] // 2
    assert baselines.grouped_auc(split, p, n) == pytest.approx(_pairwise_auc(scores, labels))


def test_summary_and_loss_warning():
    metrics = {"auc": 0.69, "best_baseline": "item_id", "best_baseline_auc": 0.70}
    assert baselines.summary(metrics) == (
        "model AUC 0.6900; best single feature item_id 0.7000 (-0.0100)"
    )
    assert baselines.model_loses(metrics)
    assert not baselines.model_loses({**metrics, "auc": 0.72})
    # The baseline's own ranking, read by the bucketed streaming AUC, is not a loss.
    assert not baselines.model_loses({**metrics, "auc": 0.69991})
    assert baselines.model_loses({**metrics, "auc": 0.69989})
    # The same predictions' RMSE, float32 against float64, is not a loss either.
    rmse = {"rmse": 0.47921798, "best_baseline": "item_id", "best_baseline_rmse": 0.47921795}
    assert not baselines.model_loses(rmse)
    assert baselines.model_loses({**rmse, "rmse": 0.4793})


def test_an_eval_split_of_one_class_has_no_baseline_auc(tmp_path):
    rng = np.random.default_rng(3)
    train = _write(tmp_path / "train.gz", _random_rows(rng, 200, np.linspace(0.1, 0.9, 6)))
    for label in (0.0, 1.0):
        held_out = _write(
            tmp_path / f"eval{label}.gz", [(1, 0, label), (2, 1, label), (3, 2, label)]
        )
        measured = baselines.measure([train], [held_out], _plan())
        assert measured["baseline_auc_item_id"] is None
        assert measured["best_baseline_auc"] is None and measured["best_baseline"] is None
        assert "both classes" in measured["baselines_undefined"]
        assert not baselines.model_loses({"auc": None, **measured})
        assert baselines.summary({"auc": 0.7, **measured}) == ""


def test_initial_biases_are_the_smoothed_log_odds_around_the_prior():
    # item 0: 30 rows, 24 liked; item 1: 10 rows, 1 liked; item 2 never seen; 4 the OOV.
    rows = np.array([30, 10, 0, 0, 0, 0, 0], float)
    labels = np.array([24, 1, 0, 0, 0, 0, 0], float)
    sums = {"item_id": baselines.Sums(rows, labels, labels)}
    plan = _plan()
    del plan.features["device"], plan.tables["device"]
    values, logit = baselines.initial_biases(sums, plan, scale=10.0)
    prior = 25 / 40
    assert logit == pytest.approx(np.log(prior / (1 - prior)))
    rate0 = (24 + 10 * prior) / 40
    rate1 = (1 + 10 * prior) / 20
    expected = np.zeros(6)
    expected[0] = np.log(rate0 / (1 - rate0)) - logit
    expected[1] = np.log(rate1 / (1 - rate1)) - logit
    assert values["items"].shape == (6,)  # the table's buckets, not the sums' extra slot
    np.testing.assert_allclose(values["items"], expected / 10.0, rtol=1e-5, atol=1e-7)
    assert values["items"][0] > 0 > values["items"][1]
    # Started from the counts of some features only: the others' tables are left out.
    only, same_logit = baselines.initial_biases(sums, plan, scale=10.0, features=["history"])
    assert only == {} and same_logit == pytest.approx(logit)


def test_initial_biases_for_regression_are_the_smoothed_means(tmp_path):
    train = _write(tmp_path / "t.gz", [(0, 0, 4.0), (0, 1, 2.0), (1, 2, 0.0), (1, 0, 0.0)])
    plan = _plan("regression")
    values, mean = baselines.initial_biases(baselines.split_sums([train], plan), plan)
    assert mean == pytest.approx(1.5)
    expected = (6.0 + 10 * 1.5) / 12 - 1.5
    assert values["items"][0] == pytest.approx(expected)
    assert values["items"][2] == 0.0
    assert set(values) == {"items", "device"}


def test_without_a_held_out_split_the_best_feature_is_chosen_by_leave_one_out():
    """A column unique to each row (an event id) scores every training row perfectly by its
    own count, and tells nothing about a row it did not count: left out, it ties."""
    rng = np.random.default_rng(4)
    rate = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    items = rng.integers(0, 5, 2000)
    y = (rng.random(2000) < rate[items]).astype(float)

    def sums(ids, size):
        rows = np.bincount(ids, minlength=size + 1).astype(float)
        labels = np.bincount(ids, y, size + 1)
        return baselines.Sums(rows, labels, labels)

    train = {"item_id": sums(items, 5), "device": sums(np.arange(2000), 2000)}
    assert baselines.leave_one_out_best(train, ["item_id", "device"], _plan()) == "item_id"
    assert baselines.leave_one_out_best(train, ["device"], _plan()) == "device"
    regression = _plan("regression")
    assert baselines.leave_one_out_best(train, ["item_id", "device"], regression) == "item_id"
