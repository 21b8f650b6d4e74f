"""Train and evaluate with TPUEstimator on the pipeline's transformed TFRecords.

On CPU (here, and for small runs):

    python -m trainer.task --pipeline-output runs/clicks --model-dir runs/model \
        --train-steps 2000

On a Cloud TPU (the same model, the same checkpoints):

    python -m trainer.task --pipeline-output gs://BUCKET/clicks --model-dir gs://BUCKET/model \
        --train-steps 100000 --batch-size 4096 --use-tpu --tpu NAME

Evaluation reads the whole eval split once, on the CPU, also with --use-tpu (the TPU's host
CPU evaluates the checkpoint the TPU wrote), unless --eval-steps caps the batches; the number
of examples evaluated is in eval_metrics.json. A checkpoint written on CPU resumes on a TPU
and one written on a TPU resumes on CPU, in the same MODEL_DIR.

MODEL_DIR receives the checkpoints, TensorBoard summaries, selection.json after each
evaluation (what a stopped run resumes from), eval_metrics.json at the end of the run, the
resolved training configuration and plan, and export/<timestamp>/, a SavedModel whose
`serving_default` takes serialized raw tf.Examples.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from common import artifacts, console, environments, storage
from trainer.checks import TrainerError, check_same_run
from trainer.cli import parse_args
from trainer.estimator import build_estimator, global_step, reproducible
from trainer.lock import hold
from trainer.prepare import RunInputs, check_model, prepare, write_training_config
from trainer.selection import (
    BEST,
    EVAL_METRICS,
    HISTORY,
    Selection,
    checkpoint_in,
    chosen_figures,
    eval_points,
    final_word,
    jsonable,
    keep_start,
    log_verdict,
    segment_of,
    start_figures,
    verdict,
    without_run_only,
)

LOG = logging.getLogger("trainer")


def train_and_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Trains to --train-steps (resuming from MODEL_DIR's checkpoint), evaluates, exports.

    Returns:
      The evaluation metrics, `trained_from_step`, `steps_trained` and `export_dir`.
    """
    run = prepare(args)  # reads and checks the pipeline output; writes nothing
    with (
        hold(args.model_dir, break_lock=args.break_lock),
        reproducible(args.seed, args.deterministic),
    ):
        check_model(args, run)
        return _train_and_evaluate(args, run)


def _train_and_evaluate(args: argparse.Namespace, run: RunInputs) -> dict[str, Any]:
    write_training_config(args, run)
    measured, on_validation, start = baselines(args, run)
    estimator = build_estimator(
        args, run.plan, run.config, run.cluster, start, key_features=run.key_features
    )
    eval_files = run.eval_files if run.eval_rows else []
    selection = Selection(args, run.plan, run.validation_files, eval_files, run.manifest.run_id)
    step_before, steps = train(args, run, estimator, selection)

    check_same_run(args.pipeline_output, run.manifest)
    best = selection.best_summary(estimator, _eval_input_fn(args, run, run.eval_files))
    metrics = chosen_figures(evaluate(args, run, estimator), best)
    metrics.update(measured)
    if selection.history:
        metrics[HISTORY] = selection.history
    metrics[BEST] = best
    metrics.update(verdict(metrics, on_validation, best, args.eval_steps is not None))
    metrics.update(start_figures(on_validation))
    check_same_run(args.pipeline_output, run.manifest)  # the evaluation read the run's own rows
    artifacts.write_json(args.model_dir, EVAL_METRICS, metrics)
    log_verdict(metrics)
    for line in selection.describe(metrics):
        LOG.info("%s", line)
    metrics["trained_from_step"] = step_before
    metrics["steps_trained"] = steps
    if args.export:
        export(args, run, estimator, metrics)
    return metrics


def baselines(args: argparse.Namespace, run: RunInputs) -> tuple[dict, dict, tuple]:
    """The baselines on eval and validation, and the model's start (`measure_and_start`)."""
    from trainer.start import measure_and_start

    return measure_and_start(run, args.id_bias_scale if args.bias_init and args.id_bias else None)


def train(
    args: argparse.Namespace, run: RunInputs, estimator, selection: Selection
) -> tuple[int, int]:
    """Trains to --train-steps, stopping at each evaluation point for the selection.

    Returns:
      The step training resumed from and the number of steps trained.
    """
    from trainer.inputs import make_input_fn
    from trainer.progress import TrainingProgress, log_trained

    training_s = 0.0
    step_before = global_step(estimator)
    start = step_before
    selection.catch_up(estimator, partial(make_input_fn, key_features=run.key_features), start)
    for target in eval_points(step_before, args.train_steps, args.eval_every_steps):
        begun, replay = segment_of(start, args.eval_every_steps)
        # Each segment reads the data in an order of its own (the seed and the step it
        # starts from): one seed for all would replay the same first batches after every
        # evaluation or resume, and the same seed and steps still give the same model.
        train_input = make_input_fn(
            run.train_files,
            run.plan,
            training=True,
            drop_remainder=args.use_tpu,
            seed=args.seed + begun,
            replay_steps=replay,
            id_bias=args.id_bias,
            oov_share=args.oov_train_share,
            key_features=run.key_features,
            sequence_dropout=args.history_dropout,
        )
        progress = [TrainingProgress(args.train_steps, args.batch_size)]
        keep = [keep_start(args.model_dir)]  # model.ckpt-0, before rotation can delete it
        began_s = time.time()
        estimator.train(train_input, max_steps=target, hooks=progress, saving_listeners=keep)
        training_s += time.time() - began_s
        selection.evaluate(estimator, partial(make_input_fn, key_features=run.key_features))
        start = target
    steps = global_step(estimator) - step_before
    log_trained(steps, training_s, args.batch_size)
    return step_before, steps


def evaluate(args: argparse.Namespace, run: RunInputs, estimator) -> dict[str, Any]:
    """The last checkpoint's figures on the eval split; none when the split is empty."""
    from trainer.progress import EvaluationProgress, eval_batches

    if run.eval_rows:
        batches = eval_batches(run.eval_rows, args.batch_size, args.eval_steps)
        return jsonable(
            estimator.evaluate(
                _eval_input_fn(args, run, run.eval_files),
                steps=args.eval_steps,
                hooks=[EvaluationProgress("evaluating", batches)],
            ),
            run.plan,
        )
    # No figure is better than an invented one: an empty split has no AUC or loss.
    LOG.warning(
        "The eval split is empty (stats.json: 0 eval rows; [split] eval_fraction = %s): "
        "nothing was evaluated",
        run.config.split.eval_fraction,
    )
    return {"examples": 0, "global_step": global_step(estimator)}


def _eval_input_fn(args: argparse.Namespace, run: RunInputs, files: list[str]):
    from trainer.inputs import make_input_fn

    return make_input_fn(
        files, run.plan, training=False, id_bias=args.id_bias, key_features=run.key_features
    )


def export(args: argparse.Namespace, run: RunInputs, estimator, metrics: dict[str, Any]) -> None:
    """Exports the chosen checkpoint (the one validation chose, else the last) to export/,
    serving raw tf.Examples; removes it again when the pipeline output was recommitted while
    it read its transform graph."""
    from trainer.export import export_saved_model, make_serving_input_receiver_fn

    best = metrics[BEST]
    serving = make_serving_input_receiver_fn(
        run.transform_output, run.plan, id_bias=args.id_bias, key_features=run.key_features
    )
    # The run id is checked before and after the export reads the transform graph: equal,
    # it read the vocabularies of the run the model was trained on.
    check_same_run(args.pipeline_output, run.manifest)
    chosen = checkpoint_in(args.model_dir, best["checkpoint"]) if best.get("checkpoint") else None
    path = export_saved_model(estimator, artifacts.join(args.model_dir, "export"), serving, chosen)
    metrics["export_dir"] = best["export_dir"] = path  # also where nothing was selected
    try:
        check_same_run(args.pipeline_output, run.manifest)
    except TrainerError:
        storage.delete_tree(path)
        parent = path.rstrip("/").rsplit("/", 1)[0]
        if not storage.list_files(parent):
            storage.delete_tree(parent)
        raise
    artifacts.write_json(args.model_dir, EVAL_METRICS, without_run_only(metrics))


def main(argv: Sequence[str] | None = None) -> int:
    environments.require(environments.TRAINER, "python -m trainer.task")
    verbose = console.start(argv)  # before TensorFlow is imported
    args = parse_args(argv)
    console.configure_logging(verbose)
    try:
        metrics = train_and_evaluate(args)
    except (TrainerError, artifacts.PipelineOutputError) as e:
        LOG.error("%s", e)
        return 2
    except Exception as e:
        from trainer.failures import failure_line

        line = failure_line(e, args)
        if line is None:
            raise
        LOG.error("%s", line)
        return 2
    print(json.dumps(metrics, indent=2))
    return final_word(metrics, args.require_beats_baseline)


if __name__ == "__main__":
    from common.process import run_main

    run_main(main)
