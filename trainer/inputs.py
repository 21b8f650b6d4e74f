"""The `input_fn` over the transformed TFRecords.

Batches are read, shuffled and parsed vectorized (batch first, then `parse_example`). Ids stay
sparse int64: never padded with 0, which is the most frequent value's id. Each sequence is cut
to its planned `max_sequence_length` here, keeping the end the plan says, because the TPU's
embedding lookup truncates and the CPU's does not: doing it in the input makes both see the
same ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

from common.plan import EmbeddingPlan, TablePlan
from embedding.columns import bias_feature, bias_features

SHUFFLE_BUFFER = 16_384
READ_BLOCK = 128
NUMERIC_CLIP = 5.0
"""Numeric features arrive as z-scores; beyond +-5 they are clipped. The cross layers multiply
inputs with each other, so one out-of-range number at serving time (a price of 1e3 where
training saw tens) would otherwise drive the logit to saturation."""


def parse_spec(plan: EmbeddingPlan) -> dict:
    """The transformed tf.Example spec the model reads: ids sparse, numbers and label dense."""
    spec = {name: tf.io.VarLenFeature(tf.int64) for name in plan.features}
    for name in plan.numeric_features:
        spec[name] = tf.io.FixedLenFeature([], tf.float32)
    spec[plan.label["name"]] = tf.io.FixedLenFeature([], tf.float32)
    return spec


def keep_and_truncate(
    ids: tf.SparseTensor, keep: tf.Tensor, length: int | None, end: str = "keep_first"
) -> tf.SparseTensor:
    """The ids where `keep` holds, renumbered 0, 1, ... within each row, and at most `length`
    of them a row: the first ones (keep_first) or the last (keep_last); `length` None keeps
    all. The result is in the layout `parse_example` gives: row-major, positions from 0,
    dense shape [batch, longest kept row].

    A few vectorized ops on the index arrays (the RaggedTensor round trip this replaces cost
    the input pipeline about a third of its CPU time).
    """
    rows = tf.boolean_mask(ids.indices[:, 0], keep)
    values = tf.boolean_mask(ids.values, keep)
    batch = ids.dense_shape[0]
    counts = tf.math.unsorted_segment_sum(tf.ones_like(rows), rows, batch)
    positions = tf.range(tf.size(rows, out_type=tf.int64)) - tf.gather(
        tf.cumsum(counts, exclusive=True), rows
    )
    if length is not None:
        if end == "keep_first":
            kept = positions < length
        else:
            skipped = tf.gather(tf.maximum(counts - length, 0), rows)
            kept = positions >= skipped
            positions -= skipped
        rows, values, positions = (tf.boolean_mask(t, kept) for t in (rows, values, positions))
        counts = tf.minimum(counts, length)
    width = tf.reduce_max(tf.concat([counts, tf.zeros([1], tf.int64)], axis=0))
    return tf.SparseTensor(tf.stack([rows, positions], axis=1), values, tf.stack([batch, width]))


def truncate(ids: tf.SparseTensor, length: int, keep: str) -> tf.SparseTensor:
    """Keeps at most `length` ids a row: the first ones (keep_first) or the last (keep_last)."""
    return keep_and_truncate(ids, tf.ones_like(ids.values, tf.bool), length, keep)


def _one_id_a_row(ids: tf.Tensor) -> tf.SparseTensor:
    """Dense [batch] ids (a categorical at serving time) as the [batch, 1] sparse ids that
    parsing the transformed examples gives. Not tf.sparse.from_dense, which drops the zeros:
    id 0 is the most frequent value."""
    ids = tf.reshape(tf.cast(ids, tf.int64), [-1])
    batch = tf.size(ids, out_type=tf.int64)
    indices = tf.stack([tf.range(batch), tf.zeros([batch], tf.int64)], axis=1)
    return tf.SparseTensor(indices, ids, tf.stack([batch, tf.constant(1, tf.int64)]))


def prepare_features(
    features: dict,
    plan: EmbeddingPlan,
    id_bias: bool = False,
    oov_share: float = 0.0,
    seed: int | None = None,
    key_features: Sequence[str] = (),
    sequence_dropout: float = 0.0,
) -> dict:
    """Drops negative ids (values outside a vocabulary without OOV buckets) and truncates
    sequences to their planned length. Used by training, evaluation and serving alike.

    Args:
      features: parsed (or, at serving, transformed) features.
      plan: the embedding plan.
      id_bias: repeat each categorical feature's ids under its bias key
        (`embedding.columns.bias_feature`), which the model's per-id bias columns read.
      oov_share: training only: this share of the categorical ids, drawn at random, is
        replaced by the table's OOV bucket, so that the OOV row is trained. With
        `frequency_threshold = 1` every training id has its own row and nothing else would
        ever update the OOV row, which unseen ids read at eval and serving time.
      seed: the draw's seed.
      key_features: categorical features the model reads only through their per-id bias
        (the split key): they appear under their bias key only, with `id_bias`, and not at
        all without it.
      sequence_dropout: training only: each id of a sequence (a history) is left out with
        this probability, a new draw every time a row is read, before the sequence is cut
        to its planned length. A long history is unique to its user; seen whole every
        epoch, the model can learn each training user from it, which does not carry over
        to users it has never seen.
    """
    prepared = {}
    for name, feature in plan.features.items():
        ids = features[name]
        if not isinstance(ids, tf.SparseTensor):
            ids = _one_id_a_row(ids)
        length, end = None, feature.truncate
        if feature.type == "sequence":
            length = feature.max_sequence_length
        elif feature.type == "bag" and feature.max_ids:
            # A bag is unordered: its cap bounds a row's ids (the plan's measured cap, met by
            # almost every row), it does not pick an end of an ordered history.
            length, end = feature.max_ids, "keep_first"
        keep = tf.math.greater_equal(ids.values, 0)
        if sequence_dropout > 0 and feature.type == "sequence":
            kept = tf.math.greater_equal(
                tf.random.uniform(tf.shape(ids.values), seed=None if seed is None else seed + 1),
                sequence_dropout,
            )
            keep = tf.math.logical_and(keep, kept)
        prepared[name] = keep_and_truncate(ids, keep, length, end)
        if oov_share > 0 and feature.type == "categorical":
            prepared[name] = to_oov_bucket(
                prepared[name], plan.tables[feature.table], oov_share, seed
            )
    if id_bias:
        for name in bias_features(plan):
            prepared[bias_feature(name)] = prepared[name]
    for name in key_features:
        prepared.pop(name, None)
    for name in plan.numeric_features:
        value = tf.reshape(tf.cast(features[name], tf.float32), [-1])
        prepared[name] = tf.clip_by_value(value, -NUMERIC_CLIP, NUMERIC_CLIP)
    return prepared


def to_oov_bucket(
    ids: tf.SparseTensor, table: TablePlan, share: float, seed: int | None = None
) -> tf.SparseTensor:
    """Replaces a random `share` of the ids by one of the table's OOV buckets (ids
    `entries` .. `entries + num_oov_buckets - 1`, picked by the id itself, so one id always
    lands in the same bucket). A table without OOV buckets is returned unchanged."""
    if table.num_oov_buckets < 1:
        return ids
    bucket = table.entries + ids.values % table.num_oov_buckets
    replaced = tf.math.less(tf.random.uniform(tf.shape(ids.values), seed=seed), share)
    return tf.SparseTensor(ids.indices, tf.where(replaced, bucket, ids.values), ids.dense_shape)


class InputError(ValueError):
    """Input files the trainer cannot split among the hosts; the message says what to do."""


def host_files(files: Sequence[str], host: int, num_hosts: int) -> list[str]:
    """The files host `host` of `num_hosts` reads: every num_hosts-th file from its index.

    Files, not examples, are split so that no host reads (or decompresses) another's data;
    the split is fixed by the sorted file list, so every host computes the same one.

    Raises:
      InputError: no files, or fewer files than hosts (a host would have nothing to read).
    """
    if not files:
        raise InputError(
            "no input files; the pipeline output has no data for this split, rerun the pipeline"
        )
    if len(files) < num_hosts:
        raise InputError(
            f"{len(files)} input file(s) ({files[0]} ...) for {num_hosts} TPU hosts: each "
            "host reads whole files, so every host needs at least one; rerun the pipeline "
            f"with --num-shards {num_hosts} (or a multiple of it)"
        )
    return list(files[host::num_hosts])


def input_deployment(params: dict) -> tuple[int, int]:
    """(this host's index, the number of hosts) of an `input_fn` call.

    TPUEstimator passes a `TPUContext` under `params["context"]` when the input runs on TPU
    hosts (PER_HOST_V2: one call per host); on CPU there is none and one process reads all.
    """
    context = params.get("context")
    if context is None:
        return 0, 1
    _, host, num_hosts, _ = context.current_input_fn_deployment()
    return host, num_hosts


def make_input_fn(
    files: Sequence[str],
    plan: EmbeddingPlan,
    training: bool,
    drop_remainder: bool = False,
    num_epochs: int | None = None,
    seed: int | None = None,
    id_bias: bool = False,
    oov_share: float = 0.0,
    key_features: Sequence[str] = (),
    sequence_dropout: float = 0.0,
    replay_steps: int = 0,
) -> Callable:
    """An Estimator `input_fn(params)` over a split's files.

    The batch size is `params["batch_size"]`: on a TPU (PER_HOST_V2) that is the batch of ONE
    core, TPUEstimator's global batch divided by the number of cores, and each host's dataset
    is dequeued once per core of that host; on CPU it is the global batch. On a TPU each host
    reads its own files (`host_files`), shuffled with its own seed.

    Args:
      files: the gzip TFRecords of transformed tf.Examples of the split
        (`common.artifacts.data_files`).
      plan: the embedding plan (which features, which lengths).
      training: shuffle and repeat (forever, or `num_epochs` times).
      drop_remainder: static batch shapes, as the TPU needs.
      num_epochs: passes over the data; None repeats forever when training, once otherwise.
      seed: shuffle seed, for reproducible order; host i uses seed + i.
      id_bias, oov_share, key_features, sequence_dropout: as `prepare_features` takes
        them; `oov_share` and `sequence_dropout` apply only when `training`.
      replay_steps: steps' worth of batches read and dropped first, random draws and all
        (`trainer.selection.segment_of`): a resumed run's data then goes on where the
        stopped one's did.

    Raises:
      InputError: (when called) fewer files than the TPU has hosts.
    """
    files = list(files)
    spec = parse_spec(plan)
    label = plan.label["name"]

    def input_fn(params):
        batch_size = params["batch_size"]
        host, num_hosts = input_deployment(params)
        mine = host_files(files, host, num_hosts)
        host_seed = None if seed is None else seed + host
        dataset = tf.data.Dataset.from_tensor_slices(mine)
        if training:
            dataset = dataset.shuffle(len(mine), seed=host_seed, reshuffle_each_iteration=True)
        # Files are read in parallel, handing over blocks of records: a parallel interleave
        # that hands over single records spends far more on the handover than on reading
        # (about 15x slower, benchmarks/run.py measures the input_fn alone).
        dataset = dataset.interleave(
            lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP").batch(READ_BLOCK),
            cycle_length=4,
            num_parallel_calls=tf.data.AUTOTUNE,
            # With a seed the order is the seed's alone, so that the same seed trains the
            # same model; without one the reader hands over whichever block is ready first.
            deterministic=not training or seed is not None,
        ).unbatch()
        if training:
            dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=host_seed)
            dataset = dataset.repeat(num_epochs)
        elif num_epochs:
            dataset = dataset.repeat(num_epochs)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)

        def parse(serialized):
            parsed = tf.io.parse_example(serialized, spec)
            return parsed, parsed.pop(label)

        def prepare(parsed, labels):
            return prepare_features(
                parsed,
                plan,
                id_bias=id_bias,
                oov_share=oov_share if training else 0.0,
                seed=host_seed,
                key_features=key_features,
                sequence_dropout=sequence_dropout if training else 0.0,
            ), labels

        dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        # Training draws random numbers (the OOV share, dropout): in a parallel map the
        # random op's state goes to whichever batch runs first, so with a seed the batches
        # draw in order, and the same seed trains the same model.
        sequential = training and seed is not None
        dataset = dataset.map(prepare, num_parallel_calls=None if sequential else tf.data.AUTOTUNE)
        if replay_steps:
            # A TPU host's dataset gives one batch to each of its cores a step (PER_HOST_V2).
            context = params.get("context")
            per_step = 1 if context is None else context.num_of_replicas_per_host
            dataset = dataset.skip(replay_steps * per_step)
        return dataset.prefetch(tf.data.AUTOTUNE)

    return input_fn
