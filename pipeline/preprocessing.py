"""The tf.Transform `preprocessing_fn`: shared vocabularies, ids, z-scored numbers.

Features (categorical, sequence or bag) that name the same vocabulary are counted together
(one vocabulary file, named after the vocabulary) and mapped through it, so they index one
embedding table. Ids keep their list structure: a sequence or a bag stays a SparseTensor of
int64 ids, never padded with 0 (id 0 is the most frequent value). The vocabularies and the
numbers' means and variances come from the pipeline's own exact measurements: known before
the function is traced (`Analyzed`, pipeline/transform_graph.py), or handed to tf.Transform's
analysis by the analyzers of pipeline/analyzers.py.

Each vocabulary's lookup table is named after the vocabulary and a digest of its contents,
not after the file tf.Transform wrote it to (TensorFlow's default name): that file lies in the
run's temporary directory, so the default put the run's id into `transform_fn/saved_model.pb`
and two runs on the same input wrote different bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import tensorflow as tf
import tensorflow_transform as tft

from common.config import Config
from pipeline import analyzers


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
            # A symbolic path (tf.Transform's analysis traces one): no saved graph
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


def lookup_table(vocabulary_path, num_oov_buckets: int, key_dtype=tf.string):
    """The table `tft.apply_vocabulary` builds by default over a text vocabulary file (a
    value outside it hashed into one of `num_oov_buckets`, or -1 without them), under its
    content-derived name. The transform graph's tables and the transforming pass's
    (pipeline/transform.py) both come from here."""
    initializer = _ContentNamedTextFileInitializer(
        vocabulary_path,
        key_dtype=key_dtype,
        key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
        value_dtype=tf.int64,
        value_index=tf.lookup.TextFileIndex.LINE_NUMBER,
    )
    if num_oov_buckets > 0:
        return tf.lookup.StaticVocabularyTable(
            initializer, num_oov_buckets=num_oov_buckets, lookup_key_dtype=key_dtype
        )
    return tf.lookup.StaticHashTable(initializer, default_value=-1)


def _lookup_fn(num_oov_buckets: int):
    """tf.Transform's `lookup_fn` for one vocabulary: `lookup_table`'s table."""

    def lookup(x, vocabulary_path):
        if tf.inside_function() and _known(vocabulary_path):
            # As tf.Transform does for its own tables: a known path builds the table once,
            # outside the traced function, not at every call of it.
            with tf.init_scope():
                built = lookup_table(vocabulary_path, num_oov_buckets, x.dtype)
        else:
            built = lookup_table(vocabulary_path, num_oov_buckets, x.dtype)
        return built.lookup(x), built.size()

    return lookup


def z_score(x: tf.Tensor, mean: tf.Tensor, variance: tf.Tensor) -> tf.Tensor:
    """(x - mean) / sqrt(variance), or x - mean where the variance is 0: the operations of
    `tft.scale_to_z_score`, in x's dtype."""
    numerator = x - mean
    denominator = tf.sqrt(variance)
    return tf.where(tf.not_equal(denominator, 0), tf.divide(numerator, denominator), numerator)


@dataclasses.dataclass(frozen=True)
class Analyzed:
    """The analysis's results, known before the graph is traced (`PreprocessingFn`).

    Attributes:
      vocabularies: vocabulary -> the path of its file (`analyzers.vocabularies`).
      moments: numeric feature -> (mean, variance) over the training split
        (`analyzers.measured_mean_and_variance`).
    """

    vocabularies: dict[str, str]
    moments: dict[str, tuple[float, float]]


class PreprocessingFn:
    """A `preprocessing_fn` for one config.

    Args:
      config: the validated feature config.
      measurements: the pipeline's measurements of the training split, from which
        tf.Transform's analysis takes the vocabularies, means and variances; None to compute
        them from the analyzed batches (picklable then, as tf.Transform's test harness needs).
      analyzed: the results themselves, when known: the function then holds no analyzer, and
        tracing it once gives the transform graph (`pipeline.transform_graph`).
    """

    def __init__(
        self,
        config: Config,
        measurements: analyzers.Measurements | None = None,
        analyzed: Analyzed | None = None,
    ):
        self._config = config
        self._measurements = measurements
        self._analyzed = analyzed

    def _vocabulary(self, inputs: dict, vocabulary: str):
        if self._analyzed is not None:
            return self._analyzed.vocabularies[vocabulary]
        names = self._config.vocabularies()[vocabulary]
        tokens = tf.concat([_values(inputs[name]) for name in names], axis=0)
        settings = self._config.vocabulary_config(vocabulary)
        return analyzers.vocabulary(tokens, vocabulary, settings, self._measurements)

    def _mean_and_variance(self, values, feature: str):
        if self._analyzed is not None:
            mean, variance = self._analyzed.moments[feature]
            return tf.constant(mean, tf.float64), tf.constant(variance, tf.float64)
        return analyzers.mean_and_variance(values, feature, self._measurements)

    def __call__(self, inputs: dict) -> dict:
        config = self._config
        outputs = {}
        for vocabulary, names in config.vocabularies().items():
            settings = config.vocabulary_config(vocabulary)
            path = self._vocabulary(inputs, vocabulary)
            for name in names:
                outputs[name] = tft.apply_vocabulary(
                    inputs[name],
                    path,
                    num_oov_buckets=settings.num_oov_buckets,
                    lookup_fn=_lookup_fn(settings.num_oov_buckets),
                )
        for feature in config.features:
            if feature.type == "numeric":
                values = inputs[feature.name]
                mean, variance = self._mean_and_variance(values, feature.name)
                # In float64, as the mean and the variance are: the same operations as
                # tft.scale_to_z_score on float64 input.
                scaled = z_score(tf.cast(values, tf.float64), mean, variance)
                outputs[feature.name] = tf.cast(scaled, tf.float32)
        outputs[config.label.name] = tf.cast(inputs[config.label.name], tf.float32)
        return outputs
