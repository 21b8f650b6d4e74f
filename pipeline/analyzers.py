"""The analysis results, taken from the pipeline's own exact measurements.

The first pass counts every token of each vocabulary and sums every numeric column exactly
(pipeline/measure.py). tf.Transform's own analyzers (`tft.vocabulary`, `tft.scale_to_z_score`)
would run the analysis graph over every training batch and count it all again. Here the
vocabulary files are written in the Beam pipeline from those counts, with the entries and the
order `tft.vocabulary` gives them (`vocabularies`), and the means and variances come from
the exact sums (`measured_mean_and_variance`); the pipeline traces the transform graph from
them once (pipeline/transform_graph.py).

The same results are also `tft.experimental.ptransform_analyzer`s (`vocabulary`,
`mean_and_variance`), for a `preprocessing_fn` analyzed by tf.Transform itself: handed the
measurements, or, without them (as tf.Transform's test harness runs it), counting the batches
tf.Transform hands them, with the same rules. The tests compare the two ways.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from tensorflow_transform.beam import experimental as tft_beam_experimental

from common import statistics
from common.config import VocabularyConfig, vocabulary_file_name
from pipeline import measure

EMPTY_VOCABULARY_ENTRY = b"49d0cd50-04bb-48c0-bc6f-5b575dce351a"
"""The one entry tf.Transform writes for a vocabulary without values (a lookup table cannot be
initialized from an empty file)."""
TEMPORARY_ENTRY = b"TEMPORARY_ASSET_VALUE"
"""What the vocabulary file holds while tf.Transform traces the graph, before analysis (the
value `tft.vocabulary` uses)."""


@dataclasses.dataclass(frozen=True)
class Measurements:
    """The first pass's measurements of the training split, PCollections of the pipeline that
    analyzes.

    Attributes:
      token_counts: ((vocabulary, token), count) for every distinct token of each vocabulary
        (`measure.CountFrequencies(config)["per_token"]`).
      moments: the one result of `measure.MeasureBatches(config)` over the training split.
    """

    token_counts: beam.PCollection
    moments: beam.PCollection


def vocabulary_lines(entries: list[tuple[int, bytes]]) -> bytes:
    """The text file of a vocabulary: one token a line, as the (count, token) `entries` are
    ordered; tf.Transform's one placeholder entry when there are none."""
    tokens = [token for _, token in entries] or [EMPTY_VOCABULARY_ENTRY]
    return b"".join(token + b"\n" for token in tokens)


def _scope(kind: str, name: str) -> str:
    """A TensorFlow name scope for a vocabulary's or a feature's analyzer: a name may hold
    spaces or letters beyond ASCII, which a scope name may not."""
    return f"{kind}_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"


def _tokens_of(kv, vocabulary: str):
    (name, token), count = kv
    if name == vocabulary:
        yield token, count


def _batch_token_counts(batch):
    (tokens,) = batch
    return Counter(tokens.tolist()).items()


def _kept(kv, frequency_threshold: int) -> bool:
    token, count = kv
    return count >= frequency_threshold and measure.in_text_file(token)


def _write_vocabulary(entries, path: str) -> str:
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(vocabulary_lines(entries))
    return path


def _smallest(entries) -> tuple[int, bytes] | None:
    """The last (count, token) entry of a vocabulary (its smallest), None if it has none."""
    return tuple(entries[-1]) if entries else None


class WriteVocabulary(beam.PTransform):
    """(token, count) pairs of one vocabulary -> {"path": the path of its file, once
    written; "smallest": its smallest (count, token) entry, or None}. A token seen `count`
    times is in the vocabulary if and only if it passes `frequency_threshold`, a text file
    can hold it, and (count, token) >= the smallest entry.

    The entries are those of `tft.vocabulary(top_k=..., frequency_threshold=...)` on the same
    tokens: tokens seen at least `frequency_threshold` times that a text file can hold
    (`measure.in_text_file`), by count descending and, among equal counts, by token
    descending (bytes), the first `top_k` of them. `Top.Of` keeps at most `top_k` of them on
    a worker at a time, as tf.Transform does.

    Args:
      settings: the vocabulary's top_k and frequency_threshold.
      path: the file to write.
    """

    def __init__(self, settings: VocabularyConfig, path: str):
        super().__init__()
        self._top_k = settings.top_k
        self._frequency_threshold = settings.frequency_threshold
        self._path = path

    def expand(self, counts):
        entries = (
            counts
            | "Keep" >> beam.Filter(_kept, self._frequency_threshold)
            | "CountFirst" >> beam.MapTuple(lambda token, count: (count, token))
            | "Top" >> beam.combiners.Top.Of(self._top_k)
        )
        return {
            "path": entries | "Write" >> beam.Map(_write_vocabulary, self._path),
            "smallest": entries | "Smallest" >> beam.Map(_smallest),
        }


def vocabularies(
    token_counts: beam.PCollection, config, directory: str
) -> tuple[beam.PCollection, beam.PCollection]:
    """Writes every vocabulary of `config` into `directory`, each under its asset name
    (`vocabulary_file_name`).

    Args:
      token_counts: `Measurements.token_counts`.
      config: the validated config.
      directory: where the files go.

    Returns:
      (vocabulary, the path of its file) and (vocabulary, its smallest (count, token) entry
      or None), one of each per vocabulary.
    """
    written = {
        name: token_counts
        | f"Select[{name}]" >> beam.FlatMap(_tokens_of, name)
        | f"Vocabulary[{name}]"
        >> WriteVocabulary(
            config.vocabulary_config(name),
            FileSystems.join(directory, vocabulary_file_name(name)),
        )
        for name in config.vocabularies()
    }

    def named(kind: str) -> beam.PCollection:
        return [
            outputs[kind] | f"Name[{name}][{kind}]" >> beam.Map(lambda v, n: (n, v), name)
            for name, outputs in written.items()
        ] | f"Vocabularies[{kind}]" >> beam.Flatten()

    return named("path"), named("smallest")


class VocabularyFile(tft_beam_experimental.PTransformAnalyzer):
    """`WriteVocabulary` as a tf.Transform analyzer: writes one vocabulary's file into
    tf.Transform's temporary directory and outputs its path.

    Args:
      vocabulary: the vocabulary's name.
      settings: its top_k and frequency_threshold.
      token_counts: `Measurements.token_counts`, or None to count the analyzed batches (each a
        1-tuple of a flat array of tokens).
    """

    def __init__(
        self,
        vocabulary: str,
        settings: VocabularyConfig,
        token_counts: beam.PCollection | None = None,
    ):
        super().__init__()
        self._vocabulary = vocabulary
        self._settings = settings
        self._token_counts = token_counts

    def expand(self, batches):
        if self._token_counts is None:
            counts = (
                batches
                | "CountTokens" >> beam.FlatMap(_batch_token_counts)
                | "SumPerToken" >> beam.CombinePerKey(sum)
            )
        else:
            counts = self._token_counts | "Select" >> beam.FlatMap(_tokens_of, self._vocabulary)
        path = FileSystems.join(self.base_temp_dir, vocabulary_file_name(self._vocabulary))
        written = counts | "Vocabulary" >> WriteVocabulary(self._settings, path)
        return written["path"] | "AsArray" >> beam.Map(np.array)


def vocabulary(
    tokens: tf.Tensor,
    name: str,
    settings: VocabularyConfig,
    measurements: Measurements | None = None,
) -> tf.Tensor:
    """The path of vocabulary `name`'s file, for `tft.apply_vocabulary`; in place of
    `tft.vocabulary(tokens, top_k=..., frequency_threshold=..., vocab_filename=name)`.

    The file is the transform graph's asset `vocabulary_file_name(name)`, found by `name`
    through `tft.TFTransformOutput.vocabulary_file_by_name`, as `tft.vocabulary`'s would be.

    Args:
      tokens: every token of the vocabulary's features, flat (the analyzed batches' tokens
        when `measurements` is None).
      name: the vocabulary's name.
      settings: its top_k and frequency_threshold.
      measurements: the pipeline's measurements, or None to count the analyzed batches.
    """
    (path,) = tft.experimental.ptransform_analyzer(
        inputs=[tokens],
        ptransform=VocabularyFile(
            name, settings, measurements.token_counts if measurements else None
        ),
        output_dtypes=[tf.string],
        output_shapes=[[]],
        output_asset_default_values=[TEMPORARY_ENTRY],
        name=_scope("vocabulary", name),
    )
    tft.annotate_asset(name, vocabulary_file_name(name))
    return path


def _batch_sums(batch) -> tuple[int, int, int]:
    (values,) = batch
    return (len(values), *measure.exact_sums(values))


def _add_sums(sums) -> tuple[int, int, int]:
    return tuple(sum(column) for column in zip(*sums, strict=True)) if sums else (0, 0, 0)


def _measured_sums(measured, feature: str) -> tuple[int, int, int]:
    count, total, total_sq, *_ = measured["numeric"].get(feature, [0, 0, 0])
    return count, total, total_sq


def measured_mean_and_variance(measured, feature: str) -> tuple[float, float]:
    """The mean and the variance of numeric `feature` that `MeanAndVariance` hands
    tf.Transform, from `measure.MeasureBatches`' result over the training split."""
    return statistics.mean_and_variance(*_measured_sums(measured, feature))


class MeanAndVariance(beam.PTransform):
    """The mean and the variance of a numeric column (`statistics.mean_and_variance`: exact,
    rounded once), as two PCollections of one float64 each.

    Args:
      feature: the column's name.
      moments: `Measurements.moments`, or None to sum the analyzed batches (each a 1-tuple of
        an array of the column's float32 values).
    """

    def __init__(self, feature: str, moments: beam.PCollection | None = None):
        super().__init__()
        self._feature = feature
        self._moments = moments

    def expand(self, batches):
        if self._moments is None:
            sums = (
                batches
                | "Sum" >> beam.Map(_batch_sums)
                | "SumAll" >> beam.CombineGlobally(_add_sums)
            )
        else:
            sums = self._moments | "Select" >> beam.Map(_measured_sums, self._feature)
        both = sums | "MeanAndVariance" >> beam.MapTuple(statistics.mean_and_variance)
        return (
            both | "Mean" >> beam.Map(lambda pair: np.float64(pair[0])),
            both | "Variance" >> beam.Map(lambda pair: np.float64(pair[1])),
        )


def mean_and_variance(
    values: tf.Tensor, feature: str, measurements: Measurements | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """The mean and the variance (float64 scalars) of a numeric feature over the training
    split, in place of those `tft.scale_to_z_score` computes.

    Args:
      values: the feature's float32 values (the analyzed batches' values when `measurements`
        is None).
      feature: the feature's name.
      measurements: the pipeline's measurements, or None to sum the analyzed batches.
    """
    mean, variance = tft.experimental.ptransform_analyzer(
        inputs=[values],
        ptransform=MeanAndVariance(feature, measurements.moments if measurements else None),
        output_dtypes=[tf.float64, tf.float64],
        output_shapes=[[], []],
        name=_scope("mean_and_variance", feature),
    )
    return mean, variance
