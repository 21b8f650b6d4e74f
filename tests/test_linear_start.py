"""The linear start (`trainer.linear`) and the one-standard-error rule of the selection."""

import argparse

import numpy as np
import pytest

from trainer import linear
from trainer.metrics import auc_standard_error

pytestmark = pytest.mark.trainer_env


def _ratings(rng, users=60, items=40, rows=3000):
    """Rows whose label is an item's quality plus a user's generosity."""
    quality = rng.normal(0, 1, items)
    generosity = rng.normal(0, 1, users)
    user = rng.integers(0, users, rows)
    item = rng.integers(0, items, rows)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-(quality[item] + generosity[user])))).astype(
        float
    )
    return user, item, labels, quality


def test_the_fit_is_the_l2_logistic_regression_of_one_hot_ids():
    sklearn = pytest.importorskip("sklearn.linear_model")
    from scipy import sparse

    rng = np.random.default_rng(3)
    user, item, labels, _ = _ratings(rng)
    (w_user, w_item), intercept = linear.fit([user, item], [60, 40], labels, (2.0, 2.0))
    # scikit-learn's objective: ||w||^2 / 2 + C * log loss, so C = 1 / l2, intercept free.
    onehot = sparse.hstack(
        [
            sparse.csr_matrix((np.ones(len(user)), (np.arange(len(user)), user)), (len(user), 60)),
            sparse.csr_matrix((np.ones(len(item)), (np.arange(len(item)), item)), (len(item), 40)),
        ]
    ).tocsr()
    reference = sklearn.LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(onehot, labels)
    np.testing.assert_allclose(w_user[:60], reference.coef_[0][:60], atol=2e-4)
    np.testing.assert_allclose(w_item[:40], reference.coef_[0][60:], atol=2e-4)
    assert intercept == pytest.approx(reference.intercept_[0], abs=2e-4)
    # Ids no row has keep a zero weight: the slot for rows without an id, here.
    assert w_user[60] == 0 and w_item[40] == 0


def _delong_by_rows(a, b, labels):
    """DeLong's paired test written out pair by pair, for small data."""
    pos, neg = labels == 1, labels == 0

    def placements(s):
        diff = s[pos][:, None] - s[neg][None, :]
        kernel = (diff > 0) + 0.5 * (diff == 0)
        return kernel.mean(axis=1), kernel.mean(axis=0), kernel.mean()

    a10, a01, auc_a = placements(a)
    b10, b01, auc_b = placements(b)
    d10, d01 = a10 - b10, a01 - b01
    variance = d10.var(ddof=1) / pos.sum() + d01.var(ddof=1) / neg.sum()
    return auc_a - auc_b, np.sqrt(variance)


def test_the_paired_auc_test_of_grouped_rows_is_delongs():
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 25, 600)
    labels = (rng.random(600) < 0.2 + 0.6 * (ids / 25)).astype(float)
    a = rng.normal(0, 1, 25) + np.linspace(-1, 1, 25)
    b = np.round(rng.normal(0, 1, 25), 1)  # some ties within b
    positives = np.bincount(ids, labels, 25)
    negatives = np.bincount(ids, 1 - labels, 25)
    difference, error = linear.paired_auc_difference(a, b, positives, negatives)
    expected_difference, expected_error = _delong_by_rows(a[ids], b[ids], labels)
    assert difference == pytest.approx(expected_difference, abs=1e-12)
    assert error == pytest.approx(expected_error, rel=1e-9)
    assert error > 0


def test_the_auc_standard_error_shrinks_with_rows_and_vanishes_without_a_class():
    small = auc_standard_error(0.7, 100, 100)
    large = auc_standard_error(0.7, 10_000, 10_000)
    # Hanley and McNeil's table: AUC 0.7 over 100 + 100 rows, SE about 0.037.
    assert small == pytest.approx(0.0367, abs=0.001)
    assert large == pytest.approx(small / 10, rel=0.05)
    assert auc_standard_error(0.7, 0, 100) == 0.0


def _label_only_plan():
    """A plan of no table: what selection reads of a plan is its label."""
    from common.plan import EmbeddingPlan

    return EmbeddingPlan(
        tables={},
        features={},
        dropped={},
        numeric_features=[],
        label={"name": "y", "type": "binary"},
        length_coverage=0.95,
        notes=[],
    )


class _FakeEstimator:
    """Returns preset validation figures per checkpoint step."""

    def __init__(self, figures):
        self.figures = figures
        self.step = 0

    def evaluate(self, input_fn, steps=None, checkpoint_path=None, name=None):
        step = 0 if checkpoint_path and checkpoint_path.endswith("-0") else self.step
        auc = self.figures[step]
        return {
            "auc": auc,
            "examples": 4000.0,
            "positives": 2000.0,
            "loss": 0.6,
            "global_step": step,
        }

    def latest_checkpoint(self):
        return None  # nothing to copy: the test reads the choice, not the files


@pytest.mark.parametrize(
    ("later", "kept"),
    [
        (0.7050, 0),  # within one standard error (about 0.008 here): the start stays
        (0.7200, 100),  # beyond it: the trained checkpoint replaces the start
    ],
)
def test_a_trained_checkpoint_replaces_the_start_only_beyond_one_standard_error(
    tmp_path, later, kept
):
    from trainer.selection import Selection

    args = argparse.Namespace(
        model_dir=str(tmp_path), eval_every_steps=100, eval_steps=None, id_bias=True
    )
    selection = Selection(args, _label_only_plan(), ["validation"], ["eval"])
    estimator = _FakeEstimator({0: 0.7000, 100: later})
    start = tmp_path / "model.ckpt-0"
    selection.evaluate(estimator, lambda *a, **k: None, checkpoint=str(start))
    estimator.step = 100
    selection.evaluate(estimator, lambda *a, **k: None, checkpoint=str(tmp_path / "model.ckpt-100"))
    assert selection.best["step"] == kept
    assert selection.needed() == pytest.approx(0.7 + auc_standard_error(0.7, 2000, 2000))


def _user_item_plan(users: int, items: int):
    from common.plan import EmbeddingPlan, FeaturePlan, TablePlan

    return EmbeddingPlan(
        tables={
            "user_id": TablePlan("user_id", ["user_id"], users, 4, "mean", users, 1, "auto"),
            "items": TablePlan("items", ["item_id"], items, 4, "mean", items, 1, "auto"),
        },
        features={
            "user_id": FeaturePlan("user_id", "user_id", "categorical"),
            "item_id": FeaturePlan("item_id", "items", "categorical"),
        },
        dropped={},
        numeric_features=[],
        label={"name": "y", "type": "binary"},
        length_coverage=0.95,
        notes=[],
    )


def _write_rows(path, users, items, labels) -> str:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for u, i, y in zip(users, items, labels, strict=True):
            example = tf.train.Example()
            example.features.feature["user_id"].int64_list.value.append(int(u))
            example.features.feature["item_id"].int64_list.value.append(int(i))
            example.features.feature["y"].float_list.value.append(float(y))
            writer.write(example.SerializeToString())
    return str(path)


def _choose(tmp_path, generosity_scale: float):
    """Trains on users 0-299 and validates on users 300-449 (unseen, as the split by key
    makes them: all on the user table's OOV row). Each item has few ratings, so which users
    happened to rate it moves its count as much as its quality does."""
    from trainer import baselines

    rng = np.random.default_rng(11)
    users, items, rows = 450, 300, 40_000
    generosity = rng.normal(0, 1, users) * generosity_scale
    quality = rng.normal(0, 0.7, items)
    user = rng.integers(0, users, rows)
    item = rng.integers(0, items, rows)
    labels = rng.random(rows) < 1 / (1 + np.exp(-(quality[item] + generosity[user])))
    train, held = user < 300, user >= 300
    plan = _user_item_plan(301, items + 1)
    files = [_write_rows(tmp_path / "train.gz", user[train], item[train], labels[train])]
    validation_files = [
        _write_rows(tmp_path / "validation.gz", np.full(held.sum(), 300), item[held], labels[held])
    ]
    sums = baselines.split_sums(files, plan, ["item_id"])["item_id"]
    counted = baselines.smoothed_rates(sums, float(sums.labels.sum() / sums.rows.sum()))
    validation = baselines.split_sums(validation_files, plan, ["item_id"])["item_id"]
    validation = baselines.Sums(
        *(a[: items + 1] for a in (validation.rows, validation.labels, validation.squares))
    )
    return linear.choose_start(files, plan, "user_id", "item_id", counted[: items + 1], validation)


def test_the_linear_start_replaces_counting_where_users_bias_the_counts(tmp_path):
    chosen = _choose(tmp_path, generosity_scale=1.5)
    assert chosen["chosen"] is True
    assert chosen["validation_auc"] > chosen["counting_validation_auc"]
    assert chosen["z"] > chosen["z_needed"] > 2
    assert set(chosen["weights"]) == {"user_id", "item_id"}
    assert len(chosen["weights"]["item_id"]) == 301 and len(chosen["weights"]["user_id"]) == 301


def test_counting_stays_the_start_where_users_have_no_effect(tmp_path):
    chosen = _choose(tmp_path, generosity_scale=0.0)
    assert chosen["chosen"] is False and "weights" not in chosen
    assert chosen["z"] <= chosen["z_needed"]


def test_a_validation_split_of_one_class_starts_from_the_key_alone(tmp_path):
    """No feature ranks validation rows of one class: no best feature, no linear start, and
    no crash; the split key's term still starts at its counts."""
    from types import SimpleNamespace

    from trainer.start import measure_and_start

    rng = np.random.default_rng(2)
    user, item, labels, _ = _ratings(rng, users=80, items=30, rows=2000)
    plan = _user_item_plan(81, 31)
    train = _write_rows(tmp_path / "train.gz", user[user < 60], item[user < 60], labels[user < 60])
    held = user >= 60
    validation = _write_rows(
        tmp_path / "validation.gz", np.full(held.sum(), 80), item[held], np.ones(held.sum())
    )
    run = SimpleNamespace(
        plan=plan,
        train_files=[train],
        eval_files=[],
        eval_rows=0,
        validation_files=[validation],
        key_features=("user_id",),
    )
    _, on_validation, (values, _) = measure_and_start(run, 10.0)
    assert on_validation["best_baseline"] is None and "linear_start" not in on_validation
    assert set(values) == {"user_id"}


def test_without_a_validation_split_the_start_still_counts_the_best_feature(tmp_path):
    from types import SimpleNamespace

    from trainer.start import measure_and_start

    rng = np.random.default_rng(2)
    user, item, labels, _ = _ratings(rng, users=80, items=30, rows=2000)
    run = SimpleNamespace(
        plan=_user_item_plan(81, 31),
        train_files=[_write_rows(tmp_path / "train.gz", user, item, labels)],
        eval_files=[],
        eval_rows=0,
        validation_files=[],
        key_features=("user_id",),
    )
    _, _, (values, _) = measure_and_start(run, 10.0)
    assert set(values) == {"user_id", "items"}
    # Every item seen in training starts at its counts; the OOV row at the prior.
    assert np.all(np.abs(values["items"][:30]) > 1e-6) and abs(values["items"][30]) < 1e-6


def _selection(tmp_path, pipeline_run, train_steps=300, every=100):
    from trainer.selection import Selection

    args = argparse.Namespace(
        model_dir=str(tmp_path),
        eval_every_steps=every,
        eval_steps=None,
        id_bias=True,
        bias_init=True,
        train_steps=train_steps,
    )
    return Selection(args, _label_only_plan(), ["validation"], ["eval"], pipeline_run)


def _earlier_run(tmp_path, pipeline_run, checkpoint: bool):
    """A model directory an earlier run left: its selection.json (measured on the validation
    rows of `pipeline_run`), its best checkpoint and, if `checkpoint`, its latest one."""
    import json

    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "model.ckpt-100.index").write_bytes(b"")
    history = [
        {"split": "validation", "global_step": step, "auc": auc}
        for step, auc in ((0, 0.70), (100, 0.75))
    ]
    best = {"step": 100, "validation_auc": 0.75, "checkpoint": "best/model.ckpt-100"}
    (tmp_path / "selection.json").write_text(
        json.dumps({"pipeline_run": pipeline_run, "history": history, "best": best})
    )
    if checkpoint:
        (tmp_path / "model.ckpt-100.index").write_bytes(b"")
        (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-100"\n')


@pytest.mark.parametrize(
    ("measured_on", "checkpoint", "taken_up"),
    [
        ("run-a", True, True),  # a resumed run on the same pipeline run
        ("run-b", True, False),  # the pipeline output was committed again since
        ("run-a", False, False),  # no checkpoint: a new model, whatever the folder holds
    ],
)
def test_a_run_takes_up_only_its_own_models_selection_on_the_same_validation_rows(
    tmp_path, measured_on, checkpoint, taken_up
):
    _earlier_run(tmp_path, measured_on, checkpoint)
    selection = _selection(tmp_path, "run-a")
    if taken_up:
        assert [h["global_step"] for h in selection.history] == [0, 100]
        assert selection.best["step"] == 100 and selection.start["auc"] == 0.70
    else:
        assert selection.history == [] and selection.best is None and selection.start is None


@pytest.mark.parametrize(("step", "evaluated"), [(200, True), (100, False), (150, False)])
def test_a_resumed_evaluation_point_missing_from_the_history_is_evaluated(
    tmp_path, step, evaluated
):
    # A run stopped after saving the checkpoint of an evaluation point and before evaluating
    # it resumes from it: that checkpoint is a candidate, as in a run that was not stopped.
    import json

    _earlier_run(tmp_path, "run-a", checkpoint=True)
    selection = _selection(tmp_path, "run-a")
    estimator = _FakeEstimator({0: 0.70, 100: 0.75, 150: 0.77, 200: 0.80})
    estimator.step = step
    selection.catch_up(estimator, lambda *a, **k: None, step)
    steps = [h["global_step"] for h in selection.history]
    assert steps == ([0, 100, step] if evaluated else [0, 100])
    written = json.loads((tmp_path / "selection.json").read_text())
    assert written["pipeline_run"] == "run-a" and written["history"] == selection.history


def test_a_start_of_no_rankable_figure_is_evaluated_once(tmp_path):
    # Validation rows of one class: no AUC, so neither the start nor any checkpoint ranks;
    # the start was evaluated again at every evaluation point.
    (tmp_path / "start").mkdir()
    (tmp_path / "start" / "model.ckpt-0.index").write_bytes(b"")
    selection = _selection(tmp_path, "run-a")
    calls = []

    class OneClass:
        step = 0

        def evaluate(self, input_fn, steps=None, checkpoint_path=None, name=None):
            calls.append(checkpoint_path)
            step = 0 if checkpoint_path else self.step
            return {"auc": 1.0, "examples": 400, "positives": 0, "loss": 0.1, "global_step": step}

        def latest_checkpoint(self):
            return None

    estimator = OneClass()
    for step in (100, 200, 300):
        estimator.step = step
        selection.evaluate(estimator, lambda *a, **k: None)
    assert [c for c in calls if c] == [str(tmp_path / "start" / "model.ckpt-0")]
    assert [h["global_step"] for h in selection.history] == [0, 100, 200, 300]
    assert selection.best is None and selection.start is None


def test_a_run_without_evaluations_selects_nothing_even_where_an_earlier_one_did(tmp_path):
    # Resumed with --eval-every-steps 0, the steps trained since the earlier evaluations are
    # never evaluated: the earlier best is not this model's best, the last checkpoint is.
    _earlier_run(tmp_path, "run-a", checkpoint=True)
    selection = _selection(tmp_path, "run-a", every=0)
    assert selection.best is None and selection.history == []
    summary = selection.best_summary(None, None)
    assert summary["selected_on"] is None and "export/ holds the last" in summary["reason"]
