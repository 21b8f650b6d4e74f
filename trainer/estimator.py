"""The TPUEstimator of a run: TPU embeddings on a Cloud TPU with --use-tpu, on CPU without."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence

from common.config import Config
from common.plan import EmbeddingPlan
from trainer.tpu_setup import tpu_cluster


@contextlib.contextmanager
def reproducible(seed: int, op_determinism: bool = True) -> Iterator[None]:
    """Within the block, the same seed, data and flags train the same model on CPU.

    TensorFlow's graph seed (RunConfig's `tf_random_seed`) does not reach everything: Keras
    draws the seeds of unseeded initializers from numpy's global generator, and some CPU
    kernels sum in thread order. This seeds Python's, numpy's and TensorFlow's generators
    and turns on TensorFlow's op determinism (docs/commit.md gives its measured cost) for the
    block only: op determinism is process-wide and refuses unseeded random ops, so a caller
    that trains in a process of its own gets its setting back. The input order is the
    seed's too (`trainer.inputs`). On a TPU the host's part is the same; the TPU's own
    embedding and all-reduce arithmetic are not promised bit for bit.
    """
    import tensorflow as tf

    # TensorFlow exports the switch on only; the way back is in the same private module
    # (tests/test_trainer.py::test_the_same_seed_trains_the_same_model uses both).
    from tensorflow.python.framework import config as tf_config

    tf.keras.utils.set_random_seed(seed)
    was_on = tf_config.is_op_determinism_enabled()
    if op_determinism and not was_on:
        tf_config.enable_op_determinism()
    try:
        yield
    finally:
        if op_determinism and not was_on:
            tf_config.disable_op_determinism()


def build_estimator(
    args: argparse.Namespace,
    plan: EmbeddingPlan,
    config: Config,
    cluster=None,
    start: tuple[dict, float] = ({}, 0.0),
    key_features: Sequence[str] = (),
):
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
      start: (table -> its bias table's initial rows, the output's initial bias), from
        `trainer.baselines.initial_biases`; the same values reach the CPU's tables and the
        TPU's table configs.
      key_features: the split key as a feature: a per-id bias only (`prepare.key_features`).
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
    bias_values, initial_logit = start
    columns = create_feature_columns(
        plan,
        id_bias=args.id_bias,
        pool_sequences=not args.history_attention,
        bias_learning_rate_fn=bias_rate,
        key_features=key_features,
        bias_initial_values=bias_values,
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
            key_features=key_features,
            bias_initial_values=bias_values,
            initial_logit=initial_logit,
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


def global_step(estimator) -> int:
    """The step of the estimator's latest checkpoint; 0 before the first one."""
    try:
        return int(estimator.get_variable_value("global_step"))
    except ValueError:
        return 0
