"""Which checkpoint the run keeps, and how its figures read against the baselines.

Training stops at `eval_points` to evaluate; `Selection` evaluates each point's checkpoint on
the validation split and keeps the best one (MODEL_DIR/best/). The final figures are judged
against the best single-feature baseline (`log_verdict`) and written to eval_metrics.json.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from common import artifacts, storage
from common.plan import EmbeddingPlan
from trainer.metrics import UNDEFINED, describe_split, finalize, rankable

LOG = logging.getLogger("trainer")

EVAL_METRICS = "eval_metrics.json"
VALIDATION = "validation"
HISTORY = "history"
BEST = "best"
BEST_DIR = "best"
RUN_ONLY = ("trained_from_step", "steps_trained", "export_dir")


def jsonable(metrics: dict, plan: EmbeddingPlan) -> dict[str, Any]:
    """An evaluation's figures as JSON values, each one None (with its reason under
    `undefined`) where it is not defined for the rows evaluated (`trainer.metrics`)."""
    return finalize(metrics, binary=plan.label["type"] == "binary")


def checkpoint_in(model_dir: str, recorded: str) -> str:
    """The path of a checkpoint eval_metrics.json records: relative to MODEL_DIR, so that a
    model directory copied elsewhere still points at its own best checkpoint (an absolute
    path written by an older run is read as the file of that name under MODEL_DIR/best/)."""
    return artifacts.join(model_dir, BEST_DIR, os.path.basename(recorded))


def eval_points(start: int, train_steps: int, every: int | None) -> list[int]:
    """The global steps at which training stops to evaluate: every `every` steps after
    `start`, and always `train_steps` itself (nothing when already trained that far)."""
    if start >= train_steps:
        return [train_steps]
    if not every:
        return [train_steps]
    points = list(range((start // every + 1) * every, train_steps, every))
    return [*points, train_steps]


class Selection:
    """Periodic evaluation on the validation split and the best checkpoint it selects.

    Each evaluation point evaluates the latest checkpoint on the validation split (the
    `validation` TensorBoard curve and the history). The best one by the selection metric
    (AUC for a binary label, RMSE for regression) is copied to MODEL_DIR/best/, so that
    checkpoint rotation cannot delete it before it is exported. Without a validation split
    nothing is selected: choosing by the eval split would report a figure chosen on the very
    rows it is reported on. The history then follows the eval split, for the curves only.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        plan: EmbeddingPlan,
        validation_files: list[str],
        eval_files: list[str],
    ):
        self.args = args
        self.plan = plan
        self.files = validation_files
        self.eval_files = eval_files
        self.metric, self.higher = (
            ("auc", True) if plan.label["type"] == "binary" else ("rmse", False)
        )
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.undefined: str | None = None
        """Why the last evaluation had no rankable figure, if it had none."""
        self.last_split: dict[str, Any] | None = None
        self._resume(args.model_dir)

    def _resume(self, model_dir: str) -> None:
        """Takes up the history and the best checkpoint of an earlier run in MODEL_DIR, so
        that a resumed run compares its checkpoints with the best one so far."""
        import tensorflow as tf

        if not storage.exists(artifacts.join(model_dir, EVAL_METRICS)):
            return
        previous = artifacts.read_json(model_dir, EVAL_METRICS)
        self.history = list(previous.get(HISTORY, []))
        best = previous.get(BEST) or {}
        checkpoint = best.get("checkpoint")
        value = best.get(f"{VALIDATION}_{self.metric}")
        if checkpoint and rankable(value):
            checkpoint = checkpoint_in(model_dir, checkpoint)
            if tf.io.gfile.exists(checkpoint + ".index"):
                self.best = {"step": best["step"], self.metric: value, "checkpoint": checkpoint}

    def evaluate(self, estimator, make_input_fn) -> None:
        if not self.args.eval_every_steps:
            return
        files, name = (self.files, VALIDATION) if self.files else (self.eval_files, "eval")
        if not files:
            return
        result = jsonable(
            estimator.evaluate(
                make_input_fn(files, self.plan, training=False, id_bias=self.args.id_bias),
                steps=self.args.eval_steps,
                # The eval split's curve is the one of the final evaluation: MODEL_DIR/eval.
                name=VALIDATION if name == VALIDATION else None,
            ),
            self.plan,
        )
        self.history.append({"split": name, **result})
        value = result.get(self.metric)
        if not rankable(value):
            # An undefined figure ranks nothing: this checkpoint is not a candidate.
            reason = (result.get(UNDEFINED) or {}).get(self.metric, "no rows")
            self.undefined = f"{name} {self.metric} undefined: {reason}"
            LOG.warning("Step %s: %s", result.get("global_step"), self.undefined)
            return
        LOG.info("Step %d: %s %s %.4f", result["global_step"], name, self.metric, value)
        self.last_split = result
        if name != VALIDATION:
            return
        better = self.best is None or (
            value > self.best[self.metric] if self.higher else value < self.best[self.metric]
        )
        if better:
            checkpoint = _keep_checkpoint(estimator.latest_checkpoint(), self.args.model_dir)
            self.best = {
                "step": result["global_step"],
                self.metric: value,
                "checkpoint": checkpoint,
            }

    def best_summary(self, estimator, eval_input_fn) -> dict[str, Any]:
        """What was selected, with the best checkpoint's eval figures when it is not the
        last one (the top-level figures are the last checkpoint's)."""
        if not self.files:
            reason = (
                "no validation rows in the pipeline output ([split] validation_fraction): "
                "nothing was selected; export/ holds the last checkpoint only"
            )
            if self.args.eval_every_steps:
                LOG.warning("%s", reason)
            return {"selected_on": None, "reason": reason}
        if self.best is None:
            reason = "no evaluation during training"
            if self.undefined:
                reason = (
                    f"{self.undefined}: no checkpoint could be ranked, nothing was selected; "
                    "export/ holds the last checkpoint"
                )
                LOG.warning("%s", reason)
            return {"selected_on": VALIDATION, "reason": reason}
        if self.undefined:
            LOG.warning("Some evaluations ranked nothing (%s)", self.undefined)
        summary = {"selected_on": VALIDATION, "metric": self.metric, **self.best}
        summary[f"{VALIDATION}_{self.metric}"] = summary.pop(self.metric)
        # Recorded relative to MODEL_DIR: the directory may be copied or moved.
        summary["checkpoint"] = artifacts.join(BEST_DIR, os.path.basename(self.best["checkpoint"]))
        if not self.eval_files:  # no eval rows: nothing to report, no figure invented
            summary["eval"] = {"examples": 0}
            LOG.info(
                "Best checkpoint: step %d by %s %s %.4f; no eval rows",
                summary["step"],
                VALIDATION,
                self.metric,
                summary[f"{VALIDATION}_{self.metric}"],
            )
            return summary
        summary["eval"] = jsonable(
            estimator.evaluate(
                eval_input_fn,
                steps=self.args.eval_steps,
                checkpoint_path=self.best["checkpoint"],
                name="eval_best",
            ),
            self.plan,
        )
        on_eval = summary["eval"].get(self.metric)
        LOG.info(
            "Best checkpoint: step %d by %s %s %.4f; on eval %s %s",
            summary["step"],
            VALIDATION,
            self.metric,
            summary[f"{VALIDATION}_{self.metric}"],
            self.metric,
            "undefined" if on_eval is None else f"{on_eval:.4f}",
        )
        return summary

    def describe(self, eval_metrics: dict[str, Any]) -> list[str]:
        """The closing lines on each split the run judged by: rows, classes, and whether its
        figures can judge a model."""
        lines = []
        if self.files and self.last_split is not None or self.undefined:
            validation = next(
                (h for h in reversed(self.history) if h.get("split") == VALIDATION), None
            )
            if validation is not None:
                lines.append(describe_split(VALIDATION, validation))
        lines.append(describe_split("eval", eval_metrics))
        return lines


def _keep_checkpoint(checkpoint: str, model_dir: str) -> str:
    """Copies a checkpoint's files to MODEL_DIR/best/ (replacing the previous best) and
    returns its path there."""
    import tensorflow as tf

    best_dir = artifacts.join(model_dir, BEST_DIR)
    if tf.io.gfile.exists(best_dir):
        tf.io.gfile.rmtree(best_dir)
    tf.io.gfile.makedirs(best_dir)
    for path in tf.io.gfile.glob(checkpoint + ".*"):
        tf.io.gfile.copy(path, artifacts.join(best_dir, os.path.basename(path)), overwrite=True)
    return artifacts.join(best_dir, os.path.basename(checkpoint))


def without_run_only(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics less what only this run's return value carries (`RUN_ONLY`)."""
    return {k: v for k, v in metrics.items() if k not in RUN_ONLY}


def log_verdict(metrics: dict[str, Any]) -> None:
    """Logs the model against its best single-feature baseline; warns when it loses."""
    from trainer.baselines import model_loses
    from trainer.baselines import summary as baseline_summary

    line = baseline_summary(metrics)
    if not line:
        return
    if model_loses(metrics):
        LOG.warning(
            "%s: the model loses to counting one column; train longer or change the model "
            "before trusting it (eval_metrics.json has every baseline)",
            line,
        )
    else:
        LOG.info("%s", line)
