"""The tf.Transform `preprocessing_fn`: shared vocabularies, ids, z-scored numbers.

Features (categorical, sequence or bag) that name the same vocabulary are counted together
(one vocabulary file, named after the vocabulary) and mapped through it, so they index one
embedding table. Ids keep their list structure: a sequence or a bag stays a SparseTensor of
int64 ids, never padded with 0 (id 0 is the most frequent value).

Each vocabulary's lookup table is named after the vocabulary and a digest of its contents,
not after the file tf.Transform wrote it to (TensorFlow's default name): that file lies in the
run's temporary directory, so the default put the run's id into `transform_fn/saved_model.pb`
and two runs on the same input wrote different bytes.
"""

from __future__ import annotations

import hashlib
import os

import tensorflow as tf
import tensorflow_transform as tft

from common.config import Config


def _values(tensor) -> tf.Tensor:
    """Every value of a [batch] or sparse [batch, None] tensor, flat."""
    if isinstance(tensor, tf.SparseTensor):
        return tensor.values
    return tensor


class _ContentNamedTextFileInitializer(tf.lookup.TextFileInitializer):
    """A text-file table initializer whose table is shared under a name from the file's
    vocabulary name and contents, not its path.

    TensorFlow shares a table between graphs and sessions of one process by this name (the
    `_shared_name` property, which StaticHashTable reads): equal names must mean equal
    contents, which a digest of the contents guarantees (the path alone does not). The one use
    of this private hook; tests/test_pipeline.py fails if TensorFlow stops reading it.
    """

    @property
    def _shared_name(self):
        filename = self._filename_arg
        if not _known(filename):
            # A symbolic path (tf.Transform's analysis pass traces one): no saved graph
            # keeps this table, so TensorFlow's own name does.
            return super()._shared_name
        if isinstance(filename, tf.Tensor):
            filename = filename.numpy()
        if isinstance(filename, bytes):
            filename = filename.decode()
        with tf.io.gfile.GFile(filename, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:32]
        name = os.path.basename(filename.rstrip("/"))
        return f"hash_table_{name}_sha256_{digest}_{self._key_index}_{self._value_index}"


def _known(path) -> bool:
    """Whether a vocabulary path is known now (a string or an eager tensor), not a symbol of
    a graph being traced."""
    return isinstance(path, (str, bytes)) or (
        isinstance(path, tf.Tensor) and not tf.is_symbolic_tensor(path)
    )


def _lookup_fn(num_oov_buckets: int):
    """tf.Transform's `lookup_fn` for one vocabulary: the table `tft.apply_vocabulary` builds
    by default (over the text file; a value outside it hashed into one of `num_oov_buckets`,
    or -1 without them), under its content-derived name."""

    def lookup(x, vocabulary_path):
        def table():
            initializer = _ContentNamedTextFileInitializer(
                vocabulary_path,
                key_dtype=x.dtype,
                key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
                value_dtype=tf.int64,
                value_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            )
            if num_oov_buckets > 0:
                return tf.lookup.StaticVocabularyTable(
                    initializer, num_oov_buckets=num_oov_buckets, lookup_key_dtype=x.dtype
                )
            return tf.lookup.StaticHashTable(initializer, default_value=-1)

        if tf.inside_function() and _known(vocabulary_path):
            # As tf.Transform does for its own tables: a known path builds the table once,
            # outside the traced function, not at every call of it.
            with tf.init_scope():
                built = table()
        else:
            built = table()
        return built.lookup(x), built.size()

    return lookup


class PreprocessingFn:
    """A picklable `preprocessing_fn` for one config.

    Args:
      config: the validated feature config.
    """

    def __init__(self, config: Config):
        self._config = config

    def __call__(self, inputs: dict) -> dict:
        config = self._config
        outputs = {}
        for vocabulary, names in config.vocabularies().items():
            settings = config.vocabulary_config(vocabulary)
            tokens = tf.concat([_values(inputs[name]) for name in names], axis=0)
            # Unit weights give the same counts, ordering and thresholds, but make
            # tf.Transform count each batch's distinct tokens in the graph and hand Beam one
            # (token, count) per distinct token and batch; without weights it hands Beam
            # every token occurrence as its own element, by far the pipeline's largest cost.
            path = tft.vocabulary(
                tokens,
                weights=tf.ones(tf.shape(tokens), tf.float32),
                top_k=settings.top_k,
                frequency_threshold=settings.frequency_threshold
                if settings.frequency_threshold > 1
                else None,
                vocab_filename=vocabulary,
                name=f"vocabulary_{vocabulary}",
            )
            for name in names:
                outputs[name] = tft.apply_vocabulary(
                    inputs[name],
                    path,
                    num_oov_buckets=settings.num_oov_buckets,
                    lookup_fn=_lookup_fn(settings.num_oov_buckets),
                )
        for feature in config.features:
            if feature.type == "numeric":
                # Mean and variance in float64: summed over batches in whatever order the
                # runner gives them, float32 sums differ in the last bits from run to run.
                scaled = tft.scale_to_z_score(tf.cast(inputs[feature.name], tf.float64))
                outputs[feature.name] = tf.cast(scaled, tf.float32)
        outputs[config.label.name] = tf.cast(inputs[config.label.name], tf.float32)
        return outputs
