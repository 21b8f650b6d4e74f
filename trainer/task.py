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

MODEL_DIR receives the checkpoints, TensorBoard summaries, eval_metrics.json after each
evaluation, the resolved training configuration and plan, and export/<timestamp>/, a SavedModel
whose `serving_default` takes serialized raw tf.Examples.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from common import artifacts, storage
from common.config import Config, read_pipeline_config
from common.plan import EmbeddingPlan
from embedding.planner import load_or_make_plan
from trainer.checks import (
    FINGERPRINTS,
    TRAINING_CONFIG,
    TrainerError,
    check_every_host_has_data,
    check_inputs,
    check_model_dir,
    check_same_run,
    check_vocabularies,
    vocabulary_fingerprints,
)

LOG = logging.getLogger("trainer")

EVAL_METRICS = "eval_metrics.json"
VALIDATION = "validation"
HISTORY = "history"
BEST = "best"
BEST_DIR = "best"
RUN_ONLY = ("trained_from_step", "steps_trained", "export_dir")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.task",
        description="Train TPUEstimator on the pipeline's output, on a Cloud TPU or on CPU.",
    )
    parser.add_argument("--pipeline-output", required=True, help="the pipeline's OUTPUT")
    parser.add_argument("--model-dir", required=True, help="checkpoints and exports (or gs://)")
    parser.add_argument("--train-steps", type=int, required=True, help="total training steps")
    parser.add_argument(
        "--eval-steps",
        type=int,
        default=None,
        help="evaluation batches (default: the whole eval split)",
    )
    parser.add_argument(
        "--eval-every-steps",
        type=int,
        default=None,
        help="also evaluate every N steps during training: on the validation split, which "
        "selects the best checkpoint (exported to export_best/), or on eval for the curves "
        "only when the pipeline output has no validation split",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=256,
        help="global batch size; on a TPU a multiple of its number of cores (each core "
        "trains on batch-size / cores examples a step)",
    )
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--optimizer", choices=("adagrad", "adam", "sgd"), default="adagrad")
    parser.add_argument(
        "--embedding-learning-rate",
        type=float,
        default=None,
        help="the embedding tables' learning rate, set apart from the dense layers' "
        "--learning-rate (default: the config's [embedding] learning_rate)",
    )
    parser.add_argument("--hidden-units", default="128,64", help="DNN layer sizes, comma separated")
    parser.add_argument(
        "--id-bias",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a per-id bias (a dimension-1 table) of every categorical feature added to the "
        "logit: the linear part of the model (default: on)",
    )
    parser.add_argument(
        "--id-bias-scale",
        type=float,
        default=10.0,
        help="factor on the per-id bias in the logit: under Adagrad or Adam the bias learns "
        "about this many times faster than the embedding rate (default: 10)",
    )
    parser.add_argument(
        "--id-bias-decay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the per-id bias tables' learning rate falls from the embedding rate to 0 over "
        "--train-steps (cosine): the fast-learning bias settles instead of following the last "
        "batches' noise (default: on)",
    )
    parser.add_argument(
        "--embedding-l2",
        type=float,
        default=0.0,
        help="weight of an L2 penalty on the embedding vectors and biases each batch looks "
        "up (0: none)",
    )
    parser.add_argument(
        "--cross-layers",
        type=int,
        default=2,
        help="DCN-v2 cross layers between the features and the DNN (default: 2; 0: none)",
    )
    parser.add_argument(
        "--history-attention",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the candidate's attention over the history positions (DIN-style) as well as "
        "the history's mean (default: off)",
    )
    parser.add_argument(
        "--oov-train-share",
        type=float,
        default=0.02,
        help="share of the categorical ids replaced by the OOV bucket in training, so the OOV "
        "row that unseen ids read is trained (0 turns it off)",
    )
    parser.add_argument("--use-tpu", action="store_true", help="train on a Cloud TPU")
    parser.add_argument("--tpu", default=None, help="the TPU name (or grpc:// address)")
    parser.add_argument(
        "--tpu-type",
        default=None,
        help="the TPU's type (v2-8, v3-8, v4-8, v3-32, ...): refuse tables that cannot fit it "
        "before any TPU work (default: the type the Cloud TPU API reports for --tpu)",
    )
    parser.add_argument("--tpu-zone", default=None)
    parser.add_argument("--gcp-project", default=None)
    parser.add_argument("--iterations-per-loop", type=int, default=100)
    parser.add_argument("--save-checkpoints-steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--export",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="export a SavedModel that serves raw tf.Examples (default: on)",
    )
    args = parser.parse_args(argv)
    try:
        args.hidden_units = [int(u) for u in args.hidden_units.split(",") if u.strip()]
    except ValueError:
        parser.error(f"--hidden-units must be integers separated by commas: {args.hidden_units}")
    for flag in ("train_steps", "batch_size", "iterations_per_loop", "save_checkpoints_steps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    if not args.hidden_units or min(args.hidden_units) < 1:
        parser.error(f"--hidden-units must be positive layer sizes, got {args.hidden_units}")
    if args.embedding_learning_rate is not None and args.embedding_learning_rate <= 0:
        parser.error("--embedding-learning-rate must be > 0")
    if args.cross_layers < 0:
        parser.error("--cross-layers must be >= 0")
    for flag in ("eval_every_steps", "eval_steps"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    if not 0.0 <= args.oov_train_share < 1.0:
        parser.error(f"--oov-train-share must be in [0, 1), got {args.oov_train_share}")
    if args.use_tpu and not args.tpu:
        parser.error("--use-tpu needs --tpu NAME")
    return args


def tpu_cluster(args: argparse.Namespace):
    """The resolver of the TPU named by --tpu, --tpu-zone and --gcp-project."""
    import tensorflow as tf

    return tf.distribute.cluster_resolver.TPUClusterResolver(
        args.tpu, zone=args.tpu_zone, project=args.gcp_project
    )


def tpu_topology(cluster) -> tuple[int, int]:
    """(hosts, cores) of the TPU behind `cluster`, asked as TPUEstimator asks it.

    TensorFlow has no public call for this in graph mode: TPUEstimator itself calls
    `tpu_system_metadata._query_tpu_system_metadata`, so this does too, which keeps our
    checks and TPUEstimator's graph on the same answer (tests/test_tpu_graph.py fakes it).
    """
    from tensorflow.python.tpu import tpu_system_metadata

    spec = cluster.cluster_spec()
    metadata = tpu_system_metadata._query_tpu_system_metadata(
        cluster.master(), cluster_def=spec.as_cluster_def() if spec.jobs else None
    )
    if not metadata.num_cores or not metadata.num_hosts:
        raise TrainerError(
            f"no TPU found at {cluster.master() or '(no address)'}: it reports "
            f"{metadata.num_cores} cores on {metadata.num_hosts} hosts; check --tpu (and "
            "--tpu-zone, --gcp-project), or train on CPU without --use-tpu"
        )
    return metadata.num_hosts, metadata.num_cores


def check_tpu_batch(batch_size: int, cores: int, hosts: int) -> None:
    """Refuses a global batch the TPU's cores cannot share equally.

    Under PER_HOST_V2 every core trains on batch_size / cores examples a step.

    Raises:
      TrainerError: batch_size is not a multiple of cores.
    """
    if batch_size % cores:
        lower = batch_size // cores * cores
        raise TrainerError(
            f"--batch-size {batch_size} cannot be split over the TPU's {cores} cores "
            f"({hosts} host(s)): each core takes batch-size / {cores} examples a step; use a "
            f"multiple of {cores}, e.g. {lower or cores} or {lower + cores}"
        )


def build_estimator(args: argparse.Namespace, plan: EmbeddingPlan, config: Config, cluster=None):
    """The TPUEstimator: TPU embeddings on a Cloud TPU with --use-tpu, on CPU without.

    `train_batch_size` is the global batch; under PER_HOST_V2 the `input_fn` of each host is
    called with `params["batch_size"]` = global batch / number of cores and is dequeued once
    per core of its host. Evaluation runs on the CPU (`eval_on_tpu=False`) so that it reads
    the finite eval split exactly once: on a TPU an eval input must never end and is read for
    a fixed number of full batches. The CPU reads the tables from the checkpoint, whole: the
    TPU shards them over hosts in contiguous row ranges (`div`, the partition strategy the
    CPU can read back).

    Args:
      args: the parsed flags.
      plan: the embedding plan.
      config: the pipeline's config (its `[embedding]` section trains the tables).
      cluster: the TPU's resolver when --use-tpu (made from the flags when None).
    """
    import tensorflow as tf

    from embedding.columns import (
        cosine_decay,
        create_embedding_config_spec,
        create_feature_columns,
    )
    from trainer.model import LOG_EVERY_N_STEPS, create_model_fn

    tpu = tf.compat.v1.estimator.tpu
    if args.use_tpu and cluster is None:
        cluster = tpu_cluster(args)
    run_config = tpu.RunConfig(
        cluster=cluster if args.use_tpu else None,
        model_dir=args.model_dir,
        save_checkpoints_steps=args.save_checkpoints_steps,
        tf_random_seed=args.seed,
        # TPUEstimator counts this in training loops of iterations_per_loop steps; on CPU a
        # loop is one step, so scale it to report steps/sec every LOG_EVERY_N_STEPS steps.
        log_step_count_steps=LOG_EVERY_N_STEPS * (1 if args.use_tpu else args.iterations_per_loop),
        tpu_config=tpu.TPUConfig(
            iterations_per_loop=args.iterations_per_loop,
            per_host_input_for_training=tpu.InputPipelineConfig.PER_HOST_V2,
        ),
    )
    # One function object for the spec's columns and the model's: the TPU's embedding engine
    # and the CPU optimizer train the bias tables at the same rates.
    bias_rate = (
        cosine_decay(config.embedding.learning_rate, args.train_steps)
        if args.id_bias and args.id_bias_decay
        else None
    )
    columns = create_feature_columns(
        plan,
        id_bias=args.id_bias,
        pool_sequences=not args.history_attention,
        bias_learning_rate_fn=bias_rate,
    )
    return tpu.TPUEstimator(
        model_fn=create_model_fn(
            plan,
            hidden_units=args.hidden_units,
            learning_rate=args.learning_rate,
            optimizer=args.optimizer,
            use_tpu=args.use_tpu,
            embedding=config.embedding,
            id_bias=args.id_bias,
            id_bias_scale=args.id_bias_scale,
            history_attention=args.history_attention,
            embedding_l2=args.embedding_l2,
            cross_layers=args.cross_layers,
            bias_learning_rate_fn=bias_rate,
        ),
        config=run_config,
        use_tpu=args.use_tpu,
        eval_on_tpu=False,
        train_batch_size=args.batch_size,
        eval_batch_size=args.batch_size,
        predict_batch_size=args.batch_size,
        embedding_config_spec=create_embedding_config_spec(columns, config.embedding),
        export_to_tpu=False,
    )


def _jsonable(metrics: dict) -> dict[str, Any]:
    """Metrics as JSON values; the AUC over rows of unseen values only where there were
    such rows (TensorFlow reports 0.0 for an empty set)."""
    values = {k: v.item() if hasattr(v, "item") else v for k, v in metrics.items()}
    for key in [k for k in values if k.startswith("examples_unseen_")]:
        if not values[key]:
            values.pop("auc_unseen_" + key[len("examples_unseen_") :], None)
    return values


def train_and_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Trains to --train-steps (resuming from MODEL_DIR's checkpoint), evaluates, exports.

    Returns:
      The evaluation metrics, plus `trained_from_step` (the checkpoint training resumed
      from, 0 for a fresh start), `steps_trained`, and `export_dir` when a model was exported.
    """
    # The manifest is read once: training and evaluation read exactly the shards it lists.
    manifest = artifacts.require_complete(args.pipeline_output)
    import tensorflow as tf
    import tensorflow_transform as tft

    from trainer.baselines import measure as measure_baselines
    from trainer.export import make_serving_input_receiver_fn
    from trainer.inputs import InputError, host_files, make_input_fn
    from trainer.tpu_check import capacity_refusal

    config = read_pipeline_config(args.pipeline_output)
    if args.embedding_learning_rate is not None:
        config = dataclasses.replace(
            config,
            embedding=dataclasses.replace(
                config.embedding, learning_rate=args.embedding_learning_rate
            ),
        )
    plan = load_or_make_plan(args.pipeline_output)
    refusal = capacity_refusal(args, config, plan)
    if refusal:
        raise TrainerError(refusal)
    transform_output = tft.TFTransformOutput(args.pipeline_output)
    check_inputs(config, plan, transform_output.transformed_feature_spec())
    check_vocabularies(plan, transform_output)
    fingerprints = vocabulary_fingerprints(plan, transform_output)
    check_model_dir(args.model_dir, plan, config, vars(args), fingerprints)
    stats = artifacts.read_json(args.pipeline_output, artifacts.STATS)
    check_same_run(args.pipeline_output, manifest)
    train_files = manifest.data_files("train")
    eval_files = manifest.data_files("eval")
    cluster = None
    if args.use_tpu:
        cluster = tpu_cluster(args)
        hosts, cores = tpu_topology(cluster)
        check_tpu_batch(args.batch_size, cores, hosts)
        try:
            host_files(train_files, 0, hosts)  # fewer files than hosts: refused before any work
        except InputError as e:
            raise TrainerError(str(e)) from e
        check_every_host_has_data(manifest, hosts)

    tf.io.gfile.makedirs(args.model_dir)
    resolved = {
        **vars(args),
        "embedding_optimizer": config.embedding.optimizer,
        "pipeline_run_id": manifest.run_id,
        FINGERPRINTS: fingerprints,
    }
    artifacts.write_json(args.model_dir, TRAINING_CONFIG, resolved)
    artifacts.write_json(args.model_dir, artifacts.PLAN, plan.to_dict())

    # A split the pipeline wrote with no rows (its one empty file) is no split to select on.
    validation_rows = stats["rows"].get(VALIDATION, 0)
    validation_files = (
        manifest.data_files(VALIDATION) if manifest.data.get(VALIDATION) and validation_rows else []
    )
    eval_rows = stats["rows"]["eval"]
    measured = measure_baselines(train_files, eval_files, plan) if eval_rows else {}

    estimator = build_estimator(args, plan, config, cluster)
    train_input = make_input_fn(
        train_files,
        plan,
        training=True,
        drop_remainder=args.use_tpu,
        seed=args.seed,
        id_bias=args.id_bias,
        oov_share=args.oov_train_share,
    )
    selection = Selection(args, plan, validation_files, eval_files if eval_rows else [])
    started = time.time()
    step_before = _global_step(estimator)
    for target in eval_points(step_before, args.train_steps, args.eval_every_steps):
        estimator.train(train_input, max_steps=target)
        selection.evaluate(estimator, make_input_fn)
    steps = _global_step(estimator) - step_before
    elapsed = time.time() - started
    LOG.info(
        "Trained %d steps in %.1f s (%.1f steps/s, %.0f examples/s)",
        steps,
        elapsed,
        steps / max(elapsed, 1e-9),
        steps * args.batch_size / max(elapsed, 1e-9),
    )

    check_same_run(args.pipeline_output, manifest)
    if eval_rows:
        metrics = _jsonable(
            estimator.evaluate(
                make_input_fn(eval_files, plan, training=False, id_bias=args.id_bias),
                steps=args.eval_steps,
            )
        )
    else:
        # No figure is better than an invented one: an empty split has no AUC or loss.
        LOG.warning(
            "The eval split is empty (stats.json: 0 eval rows; [split] eval_fraction = %s): "
            "nothing was evaluated",
            config.split.eval_fraction,
        )
        metrics = {"examples": 0, "global_step": _global_step(estimator)}
    metrics.update(measured)
    if selection.history:
        metrics[HISTORY] = selection.history
    best = selection.best_summary(
        estimator, make_input_fn(eval_files, plan, training=False, id_bias=args.id_bias)
    )
    metrics[BEST] = best
    check_same_run(args.pipeline_output, manifest)  # the evaluation read the run's own rows
    artifacts.write_json(args.model_dir, EVAL_METRICS, metrics)
    _report(metrics)
    metrics["trained_from_step"] = step_before
    metrics["steps_trained"] = steps
    if args.export:
        serving = make_serving_input_receiver_fn(transform_output, plan, id_bias=args.id_bias)
        # The run id is checked before and after the exports read the transform graph: equal,
        # they read the vocabularies of the run the model was trained on.
        check_same_run(args.pipeline_output, manifest)
        exports = []
        path = estimator.export_saved_model(artifacts.join(args.model_dir, "export"), serving)
        exports.append(path.decode() if isinstance(path, bytes) else path)
        metrics["export_dir"] = exports[-1]
        if best.get("checkpoint"):
            path = estimator.export_saved_model(
                artifacts.join(args.model_dir, "export_best"),
                serving,
                checkpoint_path=best["checkpoint"],
            )
            exports.append(path.decode() if isinstance(path, bytes) else path)
            best["export_dir"] = exports[-1]
        try:
            check_same_run(args.pipeline_output, manifest)
        except TrainerError:
            for export in exports:
                storage.delete_tree(export)
                parent = export.rstrip("/").rsplit("/", 1)[0]
                if not storage.list_files(parent):
                    storage.delete_tree(parent)
            raise
        if best.get("export_dir"):
            artifacts.write_json(args.model_dir, EVAL_METRICS, _without_run_only(metrics))
    return metrics


def _without_run_only(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k not in RUN_ONLY}


def _report(metrics: dict[str, Any]) -> None:
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
        if checkpoint and value is not None and tf.io.gfile.exists(checkpoint + ".index"):
            self.best = {"step": best["step"], self.metric: value, "checkpoint": checkpoint}

    def evaluate(self, estimator, make_input_fn) -> None:
        if not self.args.eval_every_steps:
            return
        files, name = (self.files, VALIDATION) if self.files else (self.eval_files, "eval")
        if not files:
            return
        result = _jsonable(
            estimator.evaluate(
                make_input_fn(files, self.plan, training=False, id_bias=self.args.id_bias),
                steps=self.args.eval_steps,
                # The eval split's curve is the one of the final evaluation: MODEL_DIR/eval.
                name=VALIDATION if name == VALIDATION else None,
            )
        )
        self.history.append({"split": name, **result})
        LOG.info(
            "Step %d: %s %s %.4f", result["global_step"], name, self.metric, result[self.metric]
        )
        if name != VALIDATION:
            return
        value = result[self.metric]
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
            return {"selected_on": VALIDATION, "reason": "no evaluation during training"}
        summary = {"selected_on": VALIDATION, "metric": self.metric, **self.best}
        summary[f"{VALIDATION}_{self.metric}"] = summary.pop(self.metric)
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
        summary["eval"] = _jsonable(
            estimator.evaluate(
                eval_input_fn,
                steps=self.args.eval_steps,
                checkpoint_path=self.best["checkpoint"],
                name="eval_best",
            )
        )
        LOG.info(
            "Best checkpoint: step %d by %s %s %.4f; on eval %s %.4f",
            summary["step"],
            VALIDATION,
            self.metric,
            summary[f"{VALIDATION}_{self.metric}"],
            self.metric,
            summary["eval"][self.metric],
        )
        return summary


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


def _global_step(estimator) -> int:
    try:
        return int(estimator.get_variable_value("global_step"))
    except ValueError:
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    args = parse_args(argv)
    try:
        metrics = train_and_evaluate(args)
    except (TrainerError, artifacts.PipelineOutputError) as e:
        LOG.error("%s", e)
        return 2
    except Exception as e:
        import tensorflow as tf

        if not isinstance(e, tf.errors.DataLossError):
            raise
        LOG.error(
            "a file of %s is damaged (%s); rerun the pipeline with --overwrite",
            args.pipeline_output,
            e.message.splitlines()[0] if e.message else e,
        )
        return 2
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
