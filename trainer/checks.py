"""Checks the trainer makes before it writes anything: inputs, vocabularies, model directory.

Each refuses with a `TrainerError` that says what differs and what to do, so a mistake costs
seconds, not a TPU job that dies after its start-up or, worse, trains silently on the wrong
thing (a vocabulary that does not match the table, a checkpoint of another model).
"""

from __future__ import annotations

import re
from typing import Any

from common import artifacts, storage
from common.config import Config
from common.plan import EmbeddingPlan, read_plan

TRAINING_CONFIG = "training_config.json"
FINGERPRINTS = "vocabulary_fingerprints"
"""The key of training_config.json that keeps each table's vocabulary fingerprint."""
MODEL_SHAPING_FLAGS = (
    "hidden_units",
    "optimizer",
    "id_bias",
    "id_bias_scale",
    "history_attention",
    "cross_layers",
)
"""Trainer flags that change the model's variables: a checkpoint of other values cannot
resume (other layer shapes, other optimizer slots)."""


class TrainerError(ValueError):
    """Inputs the trainer cannot train on; the message says what is wrong and what to do."""


def check_inputs(config: Config, plan: EmbeddingPlan, transformed_spec: dict) -> None:
    """Refuses a plan that does not match the transformed data, before any training.

    Raises:
      TrainerError: a planned feature or the label is not in the transformed schema, or
        has the wrong type, or the label type cannot be trained.
    """
    import tensorflow as tf

    if plan.label["type"] not in ("binary", "regression"):
        raise TrainerError(
            f"label type {plan.label['type']!r} cannot be trained; use binary or regression"
        )
    if not plan.tables:
        raise TrainerError("the plan has no embedding table; every categorical was dropped")
    expected = {name: tf.int64 for name in plan.features}
    expected.update({name: tf.float32 for name in plan.numeric_features})
    expected[plan.label["name"]] = tf.float32
    for name, dtype in expected.items():
        spec = transformed_spec.get(name)
        if spec is None:
            raise TrainerError(
                f"the plan uses {name!r} but the transformed data has no such feature; rerun "
                "`python -m embedding --pipeline-output OUTPUT` on this pipeline output"
            )
        if spec.dtype != dtype:
            raise TrainerError(
                f"{name!r} is {spec.dtype.name} in the transformed data, the model needs "
                f"{dtype.name}; rerun the pipeline and the planner"
            )
    if config.label.name != plan.label["name"]:
        raise TrainerError(
            f"the plan's label {plan.label['name']!r} is not the config's "
            f"{config.label.name!r}; rerun the planner"
        )


def check_plan_matches_config(config: Config, plan: EmbeddingPlan) -> None:
    """Refuses a plan whose label, features, tables or OOV buckets are not the config's.

    The pipeline transformed the data by the config: a label type changed in the plan would
    train squared error on a 0/1 label, a feature moved to another table would look its ids
    up in a table of other values, and OOV buckets other than the transform graph's shift
    every unseen id.

    Raises:
      TrainerError: naming the plan's field and the config's value.
    """
    fix = "rerun `python -m embedding --pipeline-output OUTPUT` instead of editing the plan"
    if plan.label != {"name": config.label.name, "type": config.label.type}:
        raise TrainerError(
            f"embedding_plan.json: label is {plan.label}, the pipeline's config says "
            f"{{'name': {config.label.name!r}, 'type': {config.label.type!r}}}; {fix}"
        )
    declared = {f.name: f for f in config.features}
    for name, feature in sorted(plan.features.items()):
        wanted = declared.get(name)
        if wanted is None:
            raise TrainerError(f"embedding_plan.json: features.{name} is not in the config; {fix}")
        if feature.type != wanted.type:
            raise TrainerError(
                f"embedding_plan.json: features.{name}.type is {feature.type!r}, the config "
                f"says {wanted.type!r}; {fix}"
            )
        if feature.table != config.vocabulary_of(wanted):
            raise TrainerError(
                f"embedding_plan.json: features.{name}.table is {feature.table!r}, the config "
                f"names vocabulary {config.vocabulary_of(wanted)!r}; {fix}"
            )
        if feature.type == "sequence" and feature.truncate != wanted.truncate:
            raise TrainerError(
                f"embedding_plan.json: features.{name}.truncate is {feature.truncate!r}, the "
                f"config says {wanted.truncate!r}; {fix}"
            )
    for name in plan.numeric_features:
        if name not in declared or declared[name].type != "numeric":
            raise TrainerError(
                f"embedding_plan.json: numeric_features lists {name!r}, which the config does "
                f"not declare numeric; {fix}"
            )
    for name, table in sorted(plan.tables.items()):
        oov = config.vocabulary_config(name).num_oov_buckets
        if table.num_oov_buckets != oov:
            raise TrainerError(
                f"embedding_plan.json: tables.{name}.num_oov_buckets is "
                f"{table.num_oov_buckets}, the transform graph has {oov}; {fix}"
            )


PLAN_CHOICES = {
    "tables": ("dimension", "combiner"),
    "features": ("max_sequence_length", "max_ids"),
}
"""The plan's values a user may change by hand: the model's capacity, not what the data is."""


def plan_edits(plan: EmbeddingPlan, measured: EmbeddingPlan) -> list[str]:
    """Where a valid plan differs from the one the statistics and config give, e.g.
    "tables.items.dimension 32 (measured plan: 16)": said in the run's summary, so that a
    hand-made choice is never mistaken for a measured one."""
    edits = []
    if sorted(plan.numeric_features) != sorted(measured.numeric_features):
        edits.append(
            f"numeric_features {sorted(plan.numeric_features)} (measured plan: "
            f"{sorted(measured.numeric_features)})"
        )
    for part, fields in PLAN_CHOICES.items():
        mine, theirs = getattr(plan, part), getattr(measured, part)
        for name in sorted(set(mine) | set(theirs)):
            if name not in mine or name not in theirs:
                where = "only in this plan" if name in mine else "not in this plan"
                edits.append(f"{part}.{name} {where}")
                continue
            for field in fields:
                a, b = getattr(mine[name], field), getattr(theirs[name], field)
                if a != b:
                    edits.append(f"{part}.{name}.{field} {a} (measured plan: {b})")
    return edits


def check_vocabularies(plan: EmbeddingPlan, transform_output) -> None:
    """Refuses a plan whose tables do not match the transform graph's vocabulary files.

    A table has one row per vocabulary entry plus its OOV buckets; ids beyond it would be
    looked up out of range, and a vocabulary file that is gone makes the exported model fail
    at its first request.

    Raises:
      TrainerError: a vocabulary file is missing, or a table's size differs from it.
    """
    for table in plan.tables.values():
        try:
            entries = int(transform_output.vocabulary_size_by_name(table.name))
        except Exception as e:  # tf.Transform raises several kinds for a missing asset
            raise TrainerError(
                f"vocabulary {table.name!r} of the transform graph cannot be read ({e}); the "
                "pipeline output is incomplete: rerun the pipeline"
            ) from None
        if entries != table.entries:
            raise TrainerError(
                f"embedding_plan.json: tables.{table.name}.entries is {table.entries}, but its "
                f"vocabulary file holds {entries}; rerun `python -m embedding "
                "--pipeline-output OUTPUT` instead of editing the plan"
            )
        if entries + table.num_oov_buckets != table.vocabulary_size:
            raise TrainerError(
                f"table {table.name!r} has {table.vocabulary_size} rows in the plan, but its "
                f"vocabulary holds {entries} entries + {table.num_oov_buckets} OOV bucket(s) = "
                f"{entries + table.num_oov_buckets}; rerun `python -m embedding "
                "--pipeline-output OUTPUT` instead of editing the plan"
            )


def _plan_shape(plan: dict[str, Any]) -> dict[str, Any]:
    """What of a plan decides the model's variables and inputs."""
    return {
        "tables": {
            name: (t["vocabulary_size"], t["dimension"], sorted(t["features"]))
            for name, t in plan["tables"].items()
        },
        "sequence lengths": {
            name: f.get("max_sequence_length", 0) for name, f in plan["features"].items()
        },
        "numeric features": sorted(plan["numeric_features"]),
        "label": plan["label"],
    }


def _differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    return [
        f"{key}: {before.get(key)!r} then, {now.get(key)!r} now"
        for key in sorted(set(before) | set(now))
        if before.get(key) != now.get(key)
    ]


def vocabulary_fingerprints(plan: EmbeddingPlan, transform_output) -> dict[str, str]:
    """Each table's vocabulary file's SHA-256: what the table's rows mean."""
    return {
        name: storage.sha256(transform_output.vocabulary_file_by_name(name))
        for name in sorted(plan.tables)
    }


def check_same_run(pipeline_output: str, manifest: artifacts.Manifest) -> None:
    """Refuses to go on when OUTPUT is no longer the commit the trainer started from.

    A rerun of the pipeline that commits while the trainer runs replaces the transform
    graph and the vocabularies: a model evaluated or exported with them would pair tables
    trained on one run's ids with another run's vocabulary. A commit deletes the old
    `_SUCCESS` before it touches any other file, so finding the same run id before and after
    reading files proves they were the run's own.

    Raises:
      TrainerError: OUTPUT has no commit now, or another run's.
    """
    try:
        now = artifacts.read_manifest(pipeline_output).run_id
    except artifacts.PipelineOutputError:
        now = None
    if now != manifest.run_id:
        raise TrainerError(
            f"{pipeline_output} was recommitted while training (run {manifest.run_id} then, "
            f"{now or 'no commit'} now): its vocabularies and data are no longer the ones "
            "the model was trained on, so nothing more was evaluated or exported; the "
            "checkpoints stay in --model-dir"
        )


TRAINER_FILES = frozenset(
    {
        "checkpoint",
        "graph.pbtxt",
        "projector_config.pbtxt",
        TRAINING_CONFIG,
        artifacts.PLAN,
        "eval_metrics.json",  # trainer.selection.EVAL_METRICS
        "selection.json",  # trainer.selection.SELECTION
        "trainer.lock",  # trainer.lock.LOCK
    }
)
"""The files the trainer (and TPUEstimator in it) writes at the top of MODEL_DIR."""
TRAINER_PREFIXES = ("model.ckpt-", "events.out.tfevents.", "checkpoint.tmp", "graph.pbtxt.tmp")
"""Checkpoints (and the `model.ckpt-N_temp/` a save writes first), TensorBoard's events, and
the temporary files TensorFlow writes before renaming them."""
EXPORT_FOLDERS = frozenset({"export", "export_best"})
"""Folders of SavedModels, one folder a timestamp (`temp-<timestamp>` while written)."""
EVENT_FOLDERS = ("eval", "eval_", "plugins")
"""TensorBoard's evaluation curves (eval/, eval_<name>/) and profiles (plugins/)."""
CHECKPOINT_FOLDERS = frozenset({"best", "start"})
"""Folders that hold only the copies of one checkpoint (trainer.selection)."""


def _trainers(relative: str) -> bool:
    """Whether a file under MODEL_DIR (its '/'-separated path) is one the trainer writes."""
    top, _, inside = relative.partition("/")
    if not inside:
        return top in TRAINER_FILES or top.startswith(TRAINER_PREFIXES)
    if top in CHECKPOINT_FOLDERS:
        return "/" not in inside and inside.startswith(("model.ckpt-", "checkpoint"))
    if top in EXPORT_FOLDERS:
        return re.fullmatch(r"(temp-)?\d+", inside.partition("/")[0]) is not None
    if top.startswith("model.ckpt-"):  # a save's model.ckpt-N_temp/ a stop left
        return top.endswith("_temp")
    if top == "plugins":
        return True
    return (
        top.startswith(EVENT_FOLDERS)
        and "/" not in inside
        and inside.startswith("events.out.tfevents.")
    )


def check_model_dir_apart(model_dir: str, pipeline_output: str) -> None:
    """Refuses a --model-dir that is (or is inside) the pipeline output, before anything is
    written there: the trainer's files would mix with the run's (whose --overwrite replaces
    only its own), its plan would replace the pipeline output's."""
    model, output = storage.canonical(model_dir).rstrip("/"), storage.canonical(pipeline_output)
    output = output.rstrip("/")
    if model == output or model.startswith(output + "/"):
        raise TrainerError(
            f"--model-dir {model_dir} is inside the pipeline output {pipeline_output}: train "
            "into a folder of its own"
        )
    if output.startswith(model + "/"):
        raise TrainerError(
            f"--model-dir {model_dir} holds the pipeline output {pipeline_output}: train into "
            "a folder of its own"
        )
    for character in storage.GLOB_CHARACTERS:
        if character in model_dir:
            raise TrainerError(
                f"--model-dir {model_dir}: a path with {character!r} in it is read as a "
                "pattern; choose a name without *, ? or ["
            )
    if storage.is_remote(model_dir) and not re.fullmatch(r"gs://[^/]+/.+", model_dir):
        raise TrainerError(f"--model-dir {model_dir}: give a folder in a bucket, gs://BUCKET/PATH")


def check_model_dir_is_ours(model_dir: str) -> None:
    """Refuses a --model-dir that holds a file the trainer does not write: the trainer
    replaces and deletes its own files there (the best checkpoint's copy, unfinished
    exports, its records), so it trains only in a new or empty folder or one it trained in
    before.

    Raises:
      TrainerError: naming the first file that is not the trainer's.
    """
    files = storage.list_files(model_dir)
    for relative in files:
        if not _trainers(relative):
            what = " (a pipeline output)" if "_SUCCESS" in files else ""
            raise TrainerError(
                f"--model-dir {model_dir}{what} holds {relative}, which the trainer does not "
                "write; it replaces and deletes files of its own there, so it trains only in a "
                "new or empty folder or one it trained in before: choose another --model-dir"
            )


def check_model_dir(
    model_dir: str,
    plan: EmbeddingPlan,
    config: Config,
    flags: dict[str, Any],
    fingerprints: dict[str, str] | None = None,
) -> None:
    """Refuses to resume a checkpoint of a different model, before anything is written.

    A model directory that holds a checkpoint keeps the plan and flags it was trained with
    (`embedding_plan.json`, `training_config.json`); the tables, sequence lengths, numeric
    features, label, layer sizes and optimizers must be the same now, and so must the
    vocabularies (`fingerprints`): a table's rows mean its vocabulary's values, so a
    checkpoint trained on another pipeline run whose vocabularies differ cannot go on, even
    with tables of the same shape. Restoring another model's checkpoint either fails halfway
    (another layer size) or, for a table of another size, silently keeps the old table.

    Raises:
      TrainerError: what differs, and to use a new --model-dir.
    """
    import tensorflow as tf

    checkpoint = tf.train.latest_checkpoint(model_dir)
    if not checkpoint:
        return
    fix = f"train into a new --model-dir, or delete {model_dir} to start over"
    saved_plan = read_plan(model_dir)
    config_path = artifacts.join(model_dir, TRAINING_CONFIG)
    if saved_plan is None or not storage.exists(config_path):
        raise TrainerError(
            f"{model_dir} holds checkpoint {checkpoint} but not the plan and flags it was "
            f"trained with ({artifacts.PLAN}, {TRAINING_CONFIG}), so it cannot be checked "
            f"against this model; {fix}"
        )
    saved = artifacts.read_json(model_dir, TRAINING_CONFIG)
    before = _plan_shape(saved_plan.to_dict())
    now = _plan_shape(plan.to_dict())
    for flag in MODEL_SHAPING_FLAGS:
        before[f"--{flag.replace('_', '-')}"] = saved.get(flag)
        now[f"--{flag.replace('_', '-')}"] = flags.get(flag)
    before["[embedding] optimizer"] = saved.get("embedding_optimizer")
    now["[embedding] optimizer"] = config.embedding.optimizer
    differences = _differences(before, now)
    saved_prints = saved.get(FINGERPRINTS) or {}
    differences += [
        f"vocabulary {name!r} holds other values than the one the checkpoint was trained on "
        f"(pipeline run {saved.get('pipeline_run_id')})"
        for name, fingerprint in (fingerprints or {}).items()
        if saved_prints.get(name) != fingerprint
    ]
    if differences:
        raise TrainerError(
            f"{model_dir} holds a checkpoint of another model ({checkpoint}); "
            + "; ".join(differences)
            + f". Resuming it would fail or keep the old variables: {fix}"
        )


def checkpoint_step(model_dir: str) -> int | None:
    """The global step of MODEL_DIR's latest checkpoint; None without one."""
    import tensorflow as tf

    checkpoint = tf.train.latest_checkpoint(model_dir)
    if not checkpoint:
        return None
    try:
        return int(tf.train.load_variable(checkpoint, "global_step"))
    except (tf.errors.OpError, ValueError, IndexError) as e:  # IndexError: a .data cut short
        raise TrainerError(
            f"checkpoint {checkpoint} cannot be read ({(str(e).splitlines() or [''])[0]}); it "
            "is damaged "
            "or cut short: delete it (and its line in MODEL_DIR/checkpoint) to resume from the "
            "one before, or train into a new --model-dir"
        ) from None


def check_train_steps(model_dir: str, train_steps: int) -> None:
    """Refuses a --train-steps the checkpoint is already past: such a run would train 0
    steps and still evaluate, export and rewrite the training config as if it had.

    Raises:
      TrainerError: naming the checkpoint's step.
    """
    step = checkpoint_step(model_dir)
    if step is not None and train_steps < step:
        raise TrainerError(
            f"{model_dir} holds a checkpoint at step {step}, past --train-steps {train_steps}: "
            f"nothing to train. Give --train-steps above {step} to train on ({step} "
            "evaluates and exports it again), or a new --model-dir"
        )


def check_every_host_has_data(manifest: artifacts.Manifest, hosts: int) -> None:
    """Refuses a TPU whose hosts would not all read training examples.

    Each host reads every hosts-th train shard (`trainer.inputs.host_files`); a host whose
    shards are all empty (a small split over many shards) would have no input to feed its
    cores.

    Raises:
      TrainerError: naming the hosts without data and what to do.
    """
    from trainer.inputs import host_files

    files = manifest.data_files("train")
    empty = manifest.empty_shards("train")
    starved = [h for h in range(hosts) if set(host_files(files, h, hosts)) <= empty]
    if starved:
        raise TrainerError(
            f"TPU host(s) {', '.join(map(str, starved))} of {hosts} would read only empty "
            f"train shards ({len(empty)} of {len(files)} are empty): rerun the pipeline with "
            f"fewer --num-shards (a multiple of {hosts}) or on more data"
        )
