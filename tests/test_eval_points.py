"""When training stops to evaluate (`--eval-every-steps`)."""

import pytest

from trainer.selection import eval_points


def test_eval_points_every_n_steps_and_at_the_end():
    assert eval_points(0, 3000, 1000) == [1000, 2000, 3000]
    assert eval_points(0, 2500, 1000) == [1000, 2000, 2500]
    # A resumed run continues the same grid, not one shifted by where it resumed.
    assert eval_points(1500, 3000, 1000) == [2000, 3000]
    assert eval_points(0, 3000, None) == [3000]
    assert eval_points(3000, 3000, 1000) == [3000]


def _flags(*extra):
    from trainer.cli import parse_args

    return parse_args(["--pipeline-output", "o", "--model-dir", "m", "--batch-size", "100", *extra])


def test_train_epochs_become_steps_and_evaluations_default_to_five_with_validation():
    from trainer.cli import resolve_length

    args = _flags("--train-epochs", "2.5")
    resolve_length(args, train_rows=1001, has_validation=True)
    assert args.train_steps == 26  # 2.5 x 1001 / 100, rounded up
    assert args.eval_every_steps == 6  # five evaluations: 6, 12, 18, 24, 26
    args = _flags("--train-steps", "3000")
    resolve_length(args, train_rows=1001, has_validation=False)
    assert args.train_steps == 3000 and args.eval_every_steps is None
    args = _flags("--train-steps", "3000", "--eval-every-steps", "0")
    resolve_length(args, train_rows=1001, has_validation=True)
    assert args.eval_every_steps is None


@pytest.mark.parametrize(
    "extra",
    [(), ("--train-steps", "10", "--train-epochs", "1"), ("--train-epochs", "0")],
)
def test_training_length_is_one_of_steps_or_epochs(extra, capsys):
    with pytest.raises(SystemExit):
        _flags(*extra)
    assert "--train-" in capsys.readouterr().err


def test_the_verdict_is_judged_on_validation_where_the_model_was_chosen():
    from trainer.selection import losing_line, verdict

    best = {"step": 10, "validation_auc": 0.70, "checkpoint": "c"}
    on_validation = {"best_baseline": "item_id", "best_baseline_auc": 0.71}
    on_eval = {"auc": 0.80, "best_baseline": "item_id", "best_baseline_auc": 0.60}
    judged = verdict(on_eval, on_validation, best)
    assert judged == {
        "beats_baseline": False,
        "verdict": {
            "judged_on": "validation",
            "auc": 0.70,
            "best_baseline": "item_id",
            "best_baseline_auc": 0.71,
            "tolerance": 0.0001,
        },
    }
    # The streaming AUC of the baseline's own ranking may read a bucket lower: equal, not
    # worse; anything further below loses.
    level = {**on_validation, "best_baseline_auc": 0.70009}
    assert verdict(on_eval, level, best)["beats_baseline"] is True
    below = {**on_validation, "best_baseline_auc": 0.70011}
    assert verdict(on_eval, below, best)["beats_baseline"] is False
    line = losing_line({**on_eval, **judged})
    assert "validation AUC 0.7000" in line and "item_id baseline's 0.7100" in line
    # Without a choice on validation, the eval figures are judged.
    judged = verdict(on_eval, {}, {"selected_on": None})
    assert judged["beats_baseline"] is True and judged["verdict"]["judged_on"] == "eval"
    assert losing_line({**on_eval, **judged}) == ""
    # Regression: lower is better.
    rmse = {"rmse": 1.1, "best_baseline": "item_id", "best_baseline_rmse": 1.0}
    assert verdict(rmse, {}, {})["beats_baseline"] is False
    assert verdict({**rmse, "rmse": 1.000001}, {}, {})["beats_baseline"] is True
    assert verdict({"examples": 0}, {}, {}) == {}
    # Figures of part of a split (--eval-steps) against baselines of all of it: no verdict.
    partial = verdict(on_eval, on_validation, best, partial=True)
    assert "beats_baseline" not in partial and "--eval-steps" in partial["verdict"]["undefined"]
    assert losing_line({**on_eval, **partial}) == ""


@pytest.mark.trainer_env  # task.main refuses to run outside the trainer environment
def test_require_beats_baseline_exits_non_zero_after_writing(monkeypatch, capsys):
    from trainer import task

    losing = {
        "auc": 0.6,
        "beats_baseline": False,
        "verdict": {
            "judged_on": "eval",
            "auc": 0.6,
            "best_baseline": "item_id",
            "best_baseline_auc": 0.7,
        },
    }
    monkeypatch.setattr(task, "train_and_evaluate", lambda args: dict(losing))
    flags = ["--pipeline-output", "o", "--model-dir", "m", "--train-steps", "1"]
    assert task.main([*flags, "--require-beats-baseline"]) == 3
    assert '"beats_baseline": false' in capsys.readouterr().out
    assert task.main(flags) == 0
    monkeypatch.setattr(task, "train_and_evaluate", lambda args: {**losing, "beats_baseline": True})
    assert task.main([*flags, "--require-beats-baseline"]) == 0
