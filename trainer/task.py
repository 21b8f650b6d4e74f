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
        "--batch-size",
        type=int,
        default=256,
        help="global batch size; on a TPU a multiple of its number of cores (each core "
        "trains on batch-size / cores examples a step)",
    )
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--optimizer", choices=("adagrad", "adam", "sgd"), default="adagrad")
    parser.add_argument("--hidden-units", default="128,64", help="DNN layer sizes, comma separated")
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
    if args.eval_steps is not None and args.eval_steps < 1:
        parser.error("--eval-steps must be >= 1 (leave it out to evaluate the whole eval split)")
    if not args.hidden_units or min(args.hidden_units) < 1:
        parser.error(f"--hidden-units must be positive layer sizes, got {args.hidden_units}")
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

    from embedding.columns import create_embedding_config_spec, create_feature_columns
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
    columns = create_feature_columns(plan)
    return tpu.TPUEstimator(
        model_fn=create_model_fn(
            plan,
            hidden_units=args.hidden_units,
            learning_rate=args.learning_rate,
            optimizer=args.optimizer,
            use_tpu=args.use_tpu,
            embedding=config.embedding,
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
    return {k: v.item() if hasattr(v, "item") else v for k, v in metrics.items()}


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

    from trainer.export import make_serving_input_receiver_fn
    from trainer.inputs import InputError, host_files, make_input_fn
    from trainer.tpu_check import capacity_refusal

    config = read_pipeline_config(args.pipeline_output)
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

    estimator = build_estimator(args, plan, config, cluster)
    started = time.time()
    step_before = _global_step(estimator)
    estimator.train(
        make_input_fn(
            train_files, plan, training=True, drop_remainder=args.use_tpu, seed=args.seed
        ),
        max_steps=args.train_steps,
    )
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
    if stats["rows"]["eval"]:
        metrics = _jsonable(
            estimator.evaluate(
                make_input_fn(eval_files, plan, training=False),
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
    artifacts.write_json(args.model_dir, EVAL_METRICS, metrics)
    metrics["trained_from_step"] = step_before
    metrics["steps_trained"] = steps
    if args.export:
        export_base = artifacts.join(args.model_dir, "export")
        check_same_run(args.pipeline_output, manifest)
        path = estimator.export_saved_model(
            export_base, make_serving_input_receiver_fn(transform_output, plan)
        )
        path = path.decode() if isinstance(path, bytes) else path
        try:
            check_same_run(args.pipeline_output, manifest)  # it read the run's own vocabularies
        except TrainerError:
            storage.delete_tree(path)
            raise
        metrics["export_dir"] = path
    return metrics


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
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
