"""A training run's inputs, read from the pipeline output and checked before any training.

`prepare` refuses, before any TPU or training work, what cannot train: tables too large for
the TPU, transformed data unlike the plan, a MODEL_DIR of another model, a batch or shards the
TPU cannot share out. `write_training_config` records the resolved flags beside the
checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

from common import artifacts, console, storage
from common.config import Config, read_pipeline_config
from common.plan import EmbeddingPlan
from embedding.planner import PlanError, load_or_make_plan, make_plan
from trainer.checks import (
    FINGERPRINTS,
    TRAINING_CONFIG,
    TrainerError,
    check_every_host_has_data,
    check_inputs,
    check_model_dir,
    check_model_dir_apart,
    check_model_dir_is_ours,
    check_plan_matches_config,
    check_same_run,
    check_train_steps,
    check_vocabularies,
    checkpoint_step,
    plan_edits,
    vocabulary_fingerprints,
)
from trainer.cli import resolve_length
from trainer.selection import VALIDATION
from trainer.tpu_setup import capacity_refusal, check_tpu_batch, tpu_cluster, tpu_topology

LOG = logging.getLogger("trainer")


@dataclasses.dataclass(frozen=True)
class RunInputs:
    """The pipeline output a run trains on, read and checked once, before any training.

    Attributes:
      manifest: the output's commit manifest; training and evaluation read its shards only.
      train_files: the train split's shards.
      eval_files: the eval split's shards.
      eval_rows: the eval split's rows (stats.json).
      validation_files: the validation split's shards; none when it has no rows.
      config: the pipeline's config, with --embedding-learning-rate applied.
      plan: the embedding plan.
      transform_output: the tf.Transform output (the exported model serves its graph).
      fingerprints: the vocabularies' fingerprints, written with the training config.
      plan_edits: where the plan differs from the measured one (a user's choice).
      cluster: the TPU's resolver with --use-tpu, else None.
      key_features: the split key, where it is a planned categorical feature and
        --key-term is on: the model gives it a per-id bias only (`key_features`).
    """

    manifest: artifacts.Manifest
    train_files: list[str]
    eval_files: list[str]
    eval_rows: int
    validation_files: list[str]
    config: Config
    plan: EmbeddingPlan
    transform_output: Any
    fingerprints: dict[str, Any]
    plan_edits: list[str] = dataclasses.field(default_factory=list)
    cluster: Any = None
    key_features: tuple[str, ...] = ()


def prepare(args: argparse.Namespace) -> RunInputs:
    """Reads the pipeline output and refuses, before any work, what cannot train here: tables
    too large for the TPU, inputs unlike the plan, a MODEL_DIR of another model, a batch or
    shards the TPU cannot share out."""
    # The manifest is read once: training and evaluation read exactly the shards it lists.
    manifest = artifacts.require_complete(args.pipeline_output)
    check_model_dir_apart(args.model_dir, args.pipeline_output)
    console.import_tensorflow(getattr(args, "verbose", False))
    import tensorflow_transform as tft

    config = read_pipeline_config(args.pipeline_output)
    if args.embedding_learning_rate is not None:
        config = dataclasses.replace(
            config,
            embedding=dataclasses.replace(
                config.embedding, learning_rate=args.embedding_learning_rate
            ),
        )
    plan = load_or_make_plan(args.pipeline_output)
    if not args.key_term:
        plan = without_split_key(plan, config)
    if args.tpu_type and not args.use_tpu:
        LOG.warning(
            "--tpu-type %s is for runs with --use-tpu: this run trains on CPU, and no TPU fit "
            "was checked",
            args.tpu_type,
        )
    refusal = capacity_refusal(args, config, plan)
    if refusal:
        raise TrainerError(refusal)
    transform_output = tft.TFTransformOutput(args.pipeline_output)
    check_plan_matches_config(config, plan)
    check_inputs(config, plan, transform_output.transformed_feature_spec())
    check_vocabularies(plan, transform_output)
    fingerprints = vocabulary_fingerprints(plan, transform_output)
    stats = artifacts.read_json(args.pipeline_output, artifacts.STATS)
    # A split the pipeline wrote with no rows (its one empty file) is no split to select on.
    has_validation = bool(manifest.data.get(VALIDATION) and stats["rows"].get(VALIDATION, 0))
    resolve_length(args, int(stats["rows"]["train"]), has_validation)
    check_model_dir(args.model_dir, plan, config, vars(args), fingerprints)
    check_same_run(args.pipeline_output, manifest)
    train_files = manifest.data_files("train")
    return RunInputs(
        manifest=manifest,
        train_files=train_files,
        eval_files=manifest.data_files("eval"),
        eval_rows=stats["rows"]["eval"],
        validation_files=manifest.data_files(VALIDATION) if has_validation else [],
        config=config,
        plan=plan,
        transform_output=transform_output,
        fingerprints=fingerprints,
        plan_edits=_plan_edits(plan, stats, config),
        cluster=check_tpu(args, manifest, train_files) if args.use_tpu else None,
        key_features=key_features(plan, config),
    )


def key_features(plan: EmbeddingPlan, config: Config) -> tuple[str, ...]:
    """The split key, where the plan has it as a categorical feature: a term that absorbs
    each training key's own effect (a user's generosity), read through its per-id bias only
    (`embedding.columns`); eval's unseen keys all read its OOV row."""
    feature = plan.features.get(config.split.key)
    return (feature.name,) if feature is not None and feature.type == "categorical" else ()


def without_split_key(plan: EmbeddingPlan, config: Config) -> EmbeddingPlan:
    """The plan less the split key (--no-key-term): the model never reads it."""
    key = config.split.key
    if key not in plan.features:
        return plan
    table = plan.features[key].table
    tables = dict(plan.tables)
    left = [n for n in tables[table].features if n != key]
    if left:
        tables[table] = dataclasses.replace(tables[table], features=left)
    else:
        del tables[table]
    return dataclasses.replace(
        plan,
        tables=tables,
        features={n: f for n, f in plan.features.items() if n != key},
        dropped={**plan.dropped, key: "the split key, left out by --no-key-term"},
    )


def _plan_edits(plan: EmbeddingPlan, stats: dict[str, Any], config: Config) -> list[str]:
    """Where the plan differs from the one stats.json and the config give; said once."""
    try:
        measured = make_plan(stats, config)
    except PlanError:
        return []
    edits = plan_edits(plan, measured)
    if edits:
        LOG.info("The plan differs from the measured plan: %s", "; ".join(edits))
    return edits


def check_model(args: argparse.Namespace, run: RunInputs) -> None:
    """Refuses, under MODEL_DIR's lock and before anything is written there, a checkpoint
    of another model and a --train-steps the checkpoint is already past."""
    check_model_dir_is_ours(args.model_dir)
    check_model_dir(args.model_dir, run.plan, run.config, vars(args), run.fingerprints)
    check_train_steps(args.model_dir, args.train_steps)
    warn_of_another_data_order(args)


RESUME_ORDER_FLAGS = ("seed", "batch_size", "eval_every_steps")
"""Flags that decide which batches each step trains on (trainer.selection.segment_of)."""


def warn_of_another_data_order(args: argparse.Namespace) -> None:
    """Warns when a run resumes training with flags that read the data in another order than
    the checkpoint was trained with: it trains, but not the model an uninterrupted run with
    the earlier flags gives."""
    step = checkpoint_step(args.model_dir)
    path = artifacts.join(args.model_dir, TRAINING_CONFIG)
    if step is None or step >= args.train_steps or not storage.exists(path):
        return
    saved = artifacts.read_json(args.model_dir, TRAINING_CONFIG)
    changed = [
        f"--{flag.replace('_', '-')} {saved.get(flag)} -> {getattr(args, flag)}"
        for flag in RESUME_ORDER_FLAGS
        if flag in saved and saved[flag] != getattr(args, flag)
    ]
    if changed:
        LOG.warning(
            "Resuming from step %d with %s: the data is read in another order than the "
            "checkpoint's run read it, so the model is not the one an uninterrupted run "
            "gives; %s records the new flags",
            step,
            ", ".join(changed),
            TRAINING_CONFIG,
        )


def check_tpu(args: argparse.Namespace, manifest: artifacts.Manifest, train_files: list[str]):
    """The TPU's resolver, once the TPU can share the batch and every host has shards."""
    from trainer.inputs import InputError, host_files

    if args.tpu_type:  # its cores are known before the TPU is reached
        from embedding.capacity import tpu_slice

        known = tpu_slice(args.tpu_type)
        check_tpu_batch(args.batch_size, known.cores, known.hosts)
    cluster = tpu_cluster(args)
    hosts, cores = tpu_topology(cluster)
    check_tpu_batch(args.batch_size, cores, hosts)
    try:
        host_files(train_files, 0, hosts)  # fewer files than hosts: refused before any work
    except InputError as e:
        raise TrainerError(str(e)) from e
    check_every_host_has_data(manifest, hosts)
    return cluster


def write_training_config(args: argparse.Namespace, run: RunInputs) -> None:
    """Writes the resolved flags and the plan to MODEL_DIR, beside the checkpoints; a run
    with nothing left to train keeps those the model was trained with."""
    import tensorflow as tf

    step = checkpoint_step(args.model_dir)
    if step is not None and step >= args.train_steps:
        LOG.info(
            "Nothing to train: the checkpoint is at step %d; %s keeps the flags it was "
            "trained with",
            step,
            TRAINING_CONFIG,
        )
        return
    tf.io.gfile.makedirs(args.model_dir)
    resolved = {
        **vars(args),
        "embedding_optimizer": run.config.embedding.optimizer,
        "pipeline_run_id": run.manifest.run_id,
        FINGERPRINTS: run.fingerprints,
        "plan_edits": run.plan_edits,
    }
    artifacts.write_json(args.model_dir, TRAINING_CONFIG, resolved)
    artifacts.write_json(args.model_dir, artifacts.PLAN, run.plan.to_dict())
