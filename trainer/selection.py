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
from trainer.metrics import (
    AUC_TOLERANCE,
    NEGATIVES,
    POSITIVES,
    RMSE_TOLERANCE,
    UNDEFINED,
    auc_standard_error,
    describe_split,
    finalize,
    rankable,
)

LOG = logging.getLogger("trainer")

EVAL_METRICS = "eval_metrics.json"
SELECTION = "selection.json"
"""The history and the best checkpoint so far, rewritten after each evaluation: a run stopped
before its end (when eval_metrics.json is written) resumes from every evaluation it made."""
VALIDATION = "validation"
HISTORY = "history"
BEST = "best"
BEST_DIR = "best"
START_DIR = "start"
PIPELINE_RUN = "pipeline_run"
"""SELECTION's record of the pipeline run whose validation rows its figures were measured on."""
RUN_ONLY = ("trained_from_step", "steps_trained", "export_dir")
LINEAR_START = "linear_start"


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


def segment_of(step: int, every: int | None) -> tuple[int, int]:
    """(the step the training segment holding `step` began at, the batches of it before
    `step`).

    Training stops at each evaluation point and reads its data anew, in the order of the
    seed plus the step the segment began at; a run resumed from a checkpoint inside a
    segment (a kill between two evaluation points) replays, read and not trained, the
    batches the segment had trained before the checkpoint, and so trains on the batches an
    uninterrupted run would: the same seed gives the same model. Without evaluation points
    a resumed run starts a segment of its own.
    """
    begun = (step // every) * every if every else step
    if step > begun:
        LOG.info(
            "Resuming at step %d, inside the segment that began at step %d: reading its "
            "first %d batches again (not trained on), so that it trains on the batches an "
            "uninterrupted run would",
            step,
            begun,
            step - begun,
        )
    return begun, step - begun


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
        pipeline_run: str | None = None,
    ):
        self.args = args
        self.pipeline_run = pipeline_run
        """The id of the pipeline run whose validation rows the evaluations read."""
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
        self.start: dict[str, Any] | None = None
        """The starting point's validation figures (step 0), where it was evaluated."""
        self._resume(args.model_dir)

    def _resume(self, model_dir: str) -> None:
        """Takes up the history and the best checkpoint of an earlier run in MODEL_DIR (from
        SELECTION, else from the eval_metrics.json of a model directory written before it),
        so that a resumed run compares its checkpoints with the best one so far.

        Only a run that resumes training takes them up, and only if they were measured on
        the validation rows of the same pipeline run: without a checkpoint to resume from
        (a new run in a folder an earlier one left) the best checkpoint is not of this
        model, and a recommitted pipeline output may hold other validation rows, whose
        figures cannot be ranked with the earlier ones."""
        import tensorflow as tf

        for name in (SELECTION, EVAL_METRICS):
            if storage.exists(artifacts.join(model_dir, name)):
                previous = artifacts.read_json(model_dir, name)
                break
        else:
            return
        measured_on = previous.get(PIPELINE_RUN)
        if not self.args.eval_every_steps:
            # Nothing is evaluated, so nothing is selected: the last checkpoint is the model,
            # not a best one of evaluations that stopped before the steps trained since.
            return
        if tf.train.latest_checkpoint(model_dir) is None:
            LOG.info(
                "No checkpoint in %s: earlier evaluations in its %s are set aside", model_dir, name
            )
            return
        if measured_on and self.pipeline_run and measured_on != self.pipeline_run:
            LOG.warning(
                "The pipeline output was committed again (run %s, evaluated before: run %s): "
                "its validation rows may differ, so the %d earlier evaluations and the best "
                "checkpoint so far are set aside; this run selects among its own checkpoints",
                self.pipeline_run,
                measured_on,
                len(previous.get(HISTORY, [])),
            )
            return
        self.history = list(previous.get(HISTORY, []))
        self.start = next(
            (h for h in self.history if h.get("split") == VALIDATION and h.get("global_step") == 0),
            None,
        )
        best = previous.get(BEST) or {}
        checkpoint = best.get("checkpoint")
        value = best.get(f"{VALIDATION}_{self.metric}")
        if checkpoint and rankable(value):
            checkpoint = checkpoint_in(model_dir, checkpoint)
            if tf.io.gfile.exists(checkpoint + ".index"):
                self.best = {"step": best["step"], self.metric: value, "checkpoint": checkpoint}

    def catch_up(self, estimator, make_input_fn, step: int) -> None:
        """Evaluates the checkpoint a run resumes from when it is an evaluation point the
        history lacks (a run stopped after saving it and before evaluating it): it is a
        candidate, as it is in a run that was not stopped."""
        every = self.args.eval_every_steps
        if not (every and 0 < step < self.args.train_steps and step % every == 0):
            return
        name = VALIDATION if self.files else "eval"
        if any((h.get("split"), h.get("global_step")) == (name, step) for h in self.history):
            return
        self.evaluate(estimator, make_input_fn)

    def evaluate_start(self, estimator, make_input_fn) -> None:
        """Makes the starting point (`model.ckpt-0`, kept under MODEL_DIR/start/ when it was
        saved: `KeepStart`) a candidate too.

        The model starts where counting ends (`--bias-init`: the best single feature's
        log-odds, the rest at 0), so a run whose training does not improve on validation
        keeps that start: the model chosen on validation is never below the count it began
        from. Evaluated once per model directory, and again on a resume that lost the best
        checkpoint; only where the start is counted and a validation split selects.
        """
        import tensorflow as tf

        start = artifacts.join(self.args.model_dir, START_DIR, "model.ckpt-0")
        counted = self.args.bias_init and self.args.id_bias
        # Once per model directory; again only where a rankable start lost the best
        # checkpoint (a start of no rankable figure, one class in validation, stays unranked).
        evaluated = any(
            (h.get("split"), h.get("global_step")) == (VALIDATION, 0) for h in self.history
        )
        wanted = not evaluated or (self.start is not None and self.best is None)
        if not (self.files and self.args.eval_every_steps and counted and wanted):
            return
        if tf.io.gfile.exists(start + ".index"):
            self.evaluate(estimator, make_input_fn, checkpoint=start)

    def evaluate(self, estimator, make_input_fn, checkpoint: str | None = None) -> None:
        """Evaluates `checkpoint` (default: the latest, after `evaluate_start`) on the
        validation split and keeps it when it is the best so far."""
        if not self.args.eval_every_steps:
            return
        if checkpoint is None:
            self.evaluate_start(estimator, make_input_fn)
        files, name = (self.files, VALIDATION) if self.files else (self.eval_files, "eval")
        if not files:
            return
        result = jsonable(
            estimator.evaluate(
                make_input_fn(files, self.plan, training=False, id_bias=self.args.id_bias),
                steps=self.args.eval_steps,
                checkpoint_path=checkpoint,
                # The eval split's curve is the one of the final evaluation: MODEL_DIR/eval.
                name=VALIDATION if name == VALIDATION else None,
            ),
            self.plan,
        )
        # A checkpoint evaluated before (a rerun with nothing left to train) keeps one entry.
        step = result.get("global_step")
        self.history = [
            h for h in self.history if (h.get("split"), h.get("global_step")) != (name, step)
        ]
        self.history.append({"split": name, **result})
        self._save()
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
        if result["global_step"] == 0:
            self.start = result
        better = self.best is None or (
            value > self.best[self.metric] if self.higher else value < self.best[self.metric]
        )
        better = better and self._beyond_start(result)
        source = checkpoint or estimator.latest_checkpoint()
        if better and source:  # (no checkpoint: a graph built and not run, as in TPU tests)
            checkpoint = _keep_checkpoint(source, self.args.model_dir)
            self.best = {
                "step": result["global_step"],
                self.metric: value,
                "checkpoint": checkpoint,
            }
        self._save()

    def _save(self) -> None:
        """Writes SELECTION: the history, and the best checkpoint as eval_metrics.json
        records it (`_resume` reads either)."""
        best = None
        if self.best is not None:
            best = {
                "step": self.best["step"],
                f"{VALIDATION}_{self.metric}": self.best[self.metric],
                "checkpoint": artifacts.join(BEST_DIR, os.path.basename(self.best["checkpoint"])),
            }
        artifacts.write_json(
            self.args.model_dir,
            SELECTION,
            {PIPELINE_RUN: self.pipeline_run, HISTORY: self.history, BEST: best},
        )

    def _beyond_start(self, result: dict[str, Any]) -> bool:
        """Whether a trained checkpoint may replace the start: by AUC, only where it beats
        the start's validation AUC by more than that AUC's standard error (the one-standard-
        error rule: the simpler model unless the data tell the better one apart). The start
        is where counting (or the linear model) ends, so a run whose training gains nothing
        beyond chance on validation keeps it. RMSE needs only be lower."""
        start = self.start
        if (
            start is None
            or result is start
            or self.metric != "auc"
            or not rankable(start.get("auc"))
        ):
            return True
        return result["auc"] > self.needed()

    def needed(self) -> float | None:
        """The validation AUC a trained checkpoint must beat to replace the start
        (`_beyond_start`); None without an evaluated start."""
        start = self.start
        if start is None or not rankable(start.get("auc")):
            return None
        margin = auc_standard_error(
            start["auc"], int(start.get(POSITIVES, 0)), int(start.get(NEGATIVES, 0))
        )
        return start["auc"] + margin

    def best_summary(self, estimator, eval_input_fn) -> dict[str, Any]:
        """What was selected, with the best checkpoint's eval figures (`chosen_figures`
        makes them the top-level figures when it is not the last checkpoint)."""
        if not self.files:
            reason = (
                "no validation rows in the pipeline output ([split] validation_fraction): "
                "nothing was selected; export/ holds the last checkpoint"
            )
            if self.args.eval_every_steps:
                LOG.warning("%s", reason)
            return {"selected_on": None, "reason": reason}
        if self.best is None:
            if not self.args.eval_every_steps:
                return {
                    "selected_on": None,
                    "reason": "no evaluation during training (--eval-every-steps 0): nothing "
                    "was selected; export/ holds the last checkpoint",
                }
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
        if self.metric == "auc" and self.needed() is not None:
            # What a trained checkpoint had to beat on validation to replace the start.
            summary["start_validation_auc"] = self.start["auc"]
            summary["validation_auc_needed"] = self.needed()
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
        if summary["step"] == 0 and summary.get("validation_auc_needed") is not None:
            LOG.info(
                "No trained checkpoint beat the start on validation by more than chance "
                "(needed auc %.4f): the start is the model",
                summary["validation_auc_needed"],
            )
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
                lines.append(
                    describe_split(VALIDATION, validation, self.args.eval_steps is not None)
                )
        lines.append(describe_split("eval", eval_metrics, self.args.eval_steps is not None))
        return lines


def keep_start(model_dir: str):
    """A `CheckpointSaverListener` that copies the checkpoint of step 0 to MODEL_DIR/start/
    as soon as it is saved: checkpoint rotation may delete `model.ckpt-0` before the first
    evaluation (more than five checkpoints apart), and a resumed run still compares with it."""
    import tensorflow as tf

    class KeepStart(tf.estimator.CheckpointSaverListener):
        def after_save(self, session, global_step_value):
            del session
            if global_step_value == 0:
                source = artifacts.join(model_dir, "model.ckpt-0")
                _keep_checkpoint(source, model_dir, START_DIR)

    return KeepStart()


def _keep_checkpoint(checkpoint: str, model_dir: str, directory: str = BEST_DIR) -> str:
    """Copies a checkpoint's files to MODEL_DIR/best/ (replacing the previous best) and
    returns its path there."""
    import tensorflow as tf

    best_dir = artifacts.join(model_dir, directory)
    if tf.io.gfile.exists(best_dir):
        tf.io.gfile.rmtree(best_dir)
    tf.io.gfile.makedirs(best_dir)
    for path in tf.io.gfile.glob(checkpoint + ".*"):
        tf.io.gfile.copy(path, artifacts.join(best_dir, os.path.basename(path)), overwrite=True)
    return artifacts.join(best_dir, os.path.basename(checkpoint))


def without_run_only(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics less what only this run's return value carries (`RUN_ONLY`)."""
    return {k: v for k, v in metrics.items() if k not in RUN_ONLY}


def chosen_figures(last: dict[str, Any], best: dict[str, Any]) -> dict[str, Any]:
    """The figures of the model the run exports: the checkpoint chosen on validation where
    one was chosen before the last step (the last checkpoint's figures then sit under
    `last`), else the last checkpoint's."""
    chosen = best.get("eval") or {}
    if best.get("checkpoint") and best["step"] != last.get("global_step"):
        if not chosen.get("examples"):  # no eval rows: nothing measured, but the step is
            return {**last, "global_step": best["step"], "last": last}
        return {**chosen, "last": last}
    return last


PARTIAL = "--eval-steps evaluated part of each split and the baselines count all of it: no verdict"


def verdict(
    metrics: dict[str, Any],
    validation_baselines: dict[str, Any],
    best: dict[str, Any],
    partial: bool = False,
) -> dict[str, Any]:
    """The chosen model against the best single-feature baseline, as TFX's Evaluator blesses
    a model: on the validation split where the model was chosen there (the rows the choice
    saw, not the eval rows it is reported on), else on eval.

    Returns:
      `beats_baseline` (the model scores at least the baseline: AUC >=, RMSE <=) and
      `verdict` (where it was judged, both figures); empty where either figure is missing;
      only `verdict.undefined` where the model's figures cover `partial` splits.
    """
    if partial:
        return {"verdict": {"undefined": PARTIAL}}
    for metric, higher in (("auc", True), ("rmse", False)):
        baseline_key = f"best_baseline_{metric}"
        on_validation = best.get(f"{VALIDATION}_{metric}")
        if on_validation is not None and validation_baselines.get(baseline_key) is not None:
            judged_on, model, baselines = VALIDATION, on_validation, validation_baselines
        elif metrics.get(metric) is not None and metrics.get(baseline_key) is not None:
            judged_on, model, baselines = "eval", metrics[metric], metrics
        else:
            continue
        base = float(baselines[baseline_key])
        # The model's AUC is streaming (bucketed), the baseline's exact: the same ranking
        # may read up to AUC_TOLERANCE lower, and is judged equal.
        tolerance = AUC_TOLERANCE if metric == "auc" else RMSE_TOLERANCE * base
        beats = float(model) >= base - tolerance if higher else float(model) <= base + tolerance
        judged = {
            "judged_on": judged_on,
            metric: float(model),
            "best_baseline": baselines["best_baseline"],
            baseline_key: base,
        }
        if tolerance:
            judged["tolerance"] = tolerance
        return {"beats_baseline": beats, "verdict": judged}
    return {}


def start_figures(on_validation: dict[str, Any]) -> dict[str, Any]:
    """eval_metrics.json's record of how the start was chosen (`trainer.start`), if it was."""
    return {k: v for k, v in on_validation.items() if k == LINEAR_START}


def losing_line(metrics: dict[str, Any]) -> str:
    """One plain line when the chosen model loses to counting one column; empty otherwise."""
    if metrics.get("beats_baseline") is not False:
        return ""
    judged = metrics["verdict"]
    metric = "auc" if "auc" in judged else "rmse"
    return (
        f"The model does not beat counting: its {judged['judged_on']} {metric.upper()} "
        f"{judged[metric]:.4f} is worse than the {judged['best_baseline']} baseline's "
        f"{judged[f'best_baseline_{metric}']:.4f}; do not deploy it as it is (train longer, "
        "change the model, or use the baseline)."
    )


def final_word(metrics: dict[str, Any], required: bool) -> int:
    """Logs `losing_line`, the run's last line, when the model loses; returns the exit
    status: 3 when it loses and --require-beats-baseline asks for a winner, else 0."""
    line = losing_line(metrics)
    if not line:
        return 0
    LOG.warning("%s", line)
    return 3 if required else 0


def log_verdict(metrics: dict[str, Any]) -> None:
    """Logs the model against its best single-feature baseline; warns when it loses."""
    from trainer.baselines import model_loses
    from trainer.baselines import summary as baseline_summary

    line = baseline_summary(metrics)
    if (metrics.get("verdict") or {}).get("undefined"):
        LOG.info("%s", metrics["verdict"]["undefined"])
        return
    if not line:
        return
    if model_loses(metrics):
        LOG.warning(
            "%s: on eval the model is below counting one column; train longer or change the "
            "model before trusting it (eval_metrics.json has every baseline)",
            line,
        )
    else:
        LOG.info("%s", line)
