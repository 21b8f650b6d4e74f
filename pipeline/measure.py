"""Vectorized measurement of raw record batches, as Beam combiners.

Each record batch is measured with pyarrow and numpy in one go (lengths, numeric moments,
per-batch token counts), so the per-row Python cost stays in parsing alone.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common import statistics
from common.config import LIST_TYPES, Config


def _empty() -> dict[str, Any]:
    return {"rows": 0, "lengths": {}, "numeric": {}}


def measure_batch(batch: pa.RecordBatch, config: Config) -> dict[str, Any]:
    """Row count, per-sequence (and per-bag) length counts and per-numeric moments of one
    batch."""
    result = _empty()
    result["rows"] = batch.num_rows
    for feature in config.features:
        column = batch.column(batch.schema.get_field_index(feature.name))
        if feature.type in LIST_TYPES:
            lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
            counts = np.bincount(lengths.astype(np.int64)) if len(lengths) else []
            result["lengths"][feature.name] = Counter(
                {int(n): int(c) for n, c in enumerate(counts) if c}
            )
        elif feature.type == "numeric":
            result["numeric"][feature.name] = _moments(column)
    label = batch.schema.get_field_index(config.label.name)
    if label >= 0:  # the label's figures too (statistics/*.pb)
        result["numeric"][config.label.name] = _moments(batch.column(label))
    return result


NO_MOMENTS = (0, 0, 0, float("inf"), float("-inf"), 0)
"""The moments of no values: count, sums, min, max, zeros."""


def _moments(column: pa.Array) -> list:
    """[count, exact sum, exact sum of squares, min, max, zeros] of a numeric column's values."""
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    if not len(values):
        return list(NO_MOMENTS)
    low, high = float(values.min()), float(values.max())
    zeros = int(np.count_nonzero(values == 0))
    return [len(values), *exact_sums(values), low, high, zeros]


_CHUNK = 1 << 14
"""Values summed at once in int64: 2**14 squares of 24-bit mantissas stay below 2**63."""


def exact_sums(values: np.ndarray) -> tuple[int, int]:
    """The exact sums of float32 `values` and of their squares, as integers scaled by
    2**SUM_SCALE_BITS and 2**(2 * SUM_SCALE_BITS) (see `common.statistics`).

    Each value is m * 2**e with an integer mantissa m of at most 24 bits; the mantissas are
    summed in int64 per exponent, vectorized, and the few per-exponent totals shifted into
    place as Python integers.
    """
    fractions, exponents = np.frexp(values.astype(np.float32))
    mantissas = (fractions * (1 << 24)).astype(np.int64)
    shifts = exponents.astype(np.int64) - 24 + statistics.SUM_SCALE_BITS
    total = total_sq = 0
    for shift in np.unique(shifts):
        group = mantissas[shifts == shift]
        if shift < 0:  # subnormals: their mantissas end in -shift zero bits
            group, shift = group >> -shift, 0
        s = sum(int(group[i : i + _CHUNK].sum()) for i in range(0, len(group), _CHUNK))
        sq = sum(int((group[i : i + _CHUNK] ** 2).sum()) for i in range(0, len(group), _CHUNK))
        total += s << int(shift)
        total_sq += sq << (2 * int(shift))
    return total, total_sq


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    a["rows"] += b["rows"]
    for name, counts in b["lengths"].items():
        a["lengths"].setdefault(name, Counter()).update(counts)
    for name, (n, s, sq, lo, hi, zeros) in b["numeric"].items():
        if name in a["numeric"]:
            n0, s0, sq0, lo0, hi0, zeros0 = a["numeric"][name]
            a["numeric"][name] = [
                n0 + n,
                s0 + s,
                sq0 + sq,
                min(lo0, lo),
                max(hi0, hi),
                zeros0 + zeros,
            ]
        else:
            a["numeric"][name] = [n, s, sq, lo, hi, zeros]
    return a


class MeasureBatches(beam.CombineFn):
    """Combines record batches into exact row, length and numeric totals."""

    def __init__(self, config: Config):
        self._config = config

    def create_accumulator(self) -> dict[str, Any]:
        return _empty()

    def add_input(self, accumulator, batch):
        return _merge(accumulator, measure_batch(batch, self._config))

    def merge_accumulators(self, accumulators):
        merged = _empty()
        for accumulator in accumulators:
            _merge(merged, accumulator)
        return merged

    def extract_output(self, accumulator):
        return {
            "rows": accumulator["rows"],
            "lengths": {
                k: {str(n): c for n, c in sorted(v.items())}
                for k, v in accumulator["lengths"].items()
            },
            "numeric": accumulator["numeric"],
        }


def in_text_file(token: bytes) -> bool:
    """Whether `tft.vocabulary` keeps a token in a text vocabulary file: it drops the empty
    token and any token holding a line break, which a line of the file cannot hold. Such a
    token is out of the vocabulary however often it is seen."""
    return bool(token) and b"\n" not in token and b"\r" not in token


def _distinct_counts(values: pa.Array) -> Iterator[tuple[bytes, int]]:
    """(token, count) for every distinct value of an array (nothing for an empty one)."""
    if len(values) == 0:
        return
    counted = pc.value_counts(values)
    yield from zip(
        counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True
    )


def token_counts(batch: pa.RecordBatch, config: Config) -> Iterator[tuple[tuple[str, bytes], int]]:
    """((vocabulary, token), count) for every distinct token of each vocabulary in a batch."""
    for vocabulary, features in config.vocabularies().items():
        values = pa.concat_arrays(
            [pc.list_flatten(batch.column(batch.schema.get_field_index(name))) for name in features]
        )
        for token, count in _distinct_counts(values):
            yield (vocabulary, token), count


OVERLAP_FIELDS = (
    "shared_values",
    "tokens_a",
    "tokens_b",
    "sum_x",
    "sum_y",
    "sum_xx",
    "sum_yy",
    "sum_xy",
)
"""What `CountFrequencies` sums over the values two vocabularies share: their number, the
tokens (occurrences) of those values in each vocabulary, and the sums that give the Pearson
correlation of x = log(frequency in a) and y = log(frequency in b) over them
(`common.statistics.overlap_summary`). Sums combine in any order and have a constant size
however many values are shared, so the measurement scales like the rest."""


def _shared_pairs(token_counts):
    """(token, [(vocabulary, count), ...]) -> ((a, b), OVERLAP_FIELDS figures of this token)
    for each pair of vocabularies holding it."""
    _, held = token_counts
    counts = dict(held)
    names = sorted(counts)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            x, y = math.log(counts[a]), math.log(counts[b])
            yield (a, b), (1, counts[a], counts[b], x, y, x * x, y * y, x * y)


def _sum_tuples(tuples):
    return tuple(sum(column) for column in zip(*tuples, strict=True)) if tuples else ()


def _frequencies(vocabulary: str, triples):
    """(vocabulary, [(frequency, values seen that often, whether a vocabulary file can hold
    them), ...]) -> (vocabulary, sorted [(frequency, values), ...]) of the values it can
    hold; the tokens and values of the others to the UNSTORABLE output."""
    pairs = sorted((f, n) for f, n, storable in triples if storable)
    others = [(f, n) for f, n, storable in triples if not storable]
    if others:
        tokens, values = sum(f * n for f, n in others), sum(n for _, n in others)
        yield beam.pvalue.TaggedOutput(UNSTORABLE, (vocabulary, [tokens, values]))
    yield vocabulary, pairs


UNSTORABLE = "unstorable"


class CountFrequencies(beam.PTransform):
    """Record batches -> per vocabulary the frequency of frequencies, and value overlaps.

    Outputs a dict of PCollections:
      frequencies: (vocabulary, [(frequency, distinct values seen that often), ...]), of the
        values a vocabulary file can hold (`in_text_file`).
      unstorable: (vocabulary, [tokens, distinct values]) of the values no vocabulary file
        can hold (empty, or holding a line break): always out of the vocabulary. Only for a
        vocabulary that has some.
      overlaps: ((vocabulary a, vocabulary b), [the OVERLAP_FIELDS sums over the values both
        hold]).
      per_token: ((vocabulary, token), count), every distinct token.
    """

    def __init__(self, config: Config):
        super().__init__()
        self._config = config

    def expand(self, batches):
        per_token = (
            batches
            | "TokenCounts" >> beam.FlatMap(token_counts, self._config)
            | "SumPerToken" >> beam.CombinePerKey(sum)
        )
        frequencies = (
            per_token
            | "KeyByFrequency"
            >> beam.Map(lambda kv: ((kv[0][0], kv[1], in_text_file(kv[0][1])), 1))
            | "CountPerFrequency" >> beam.CombinePerKey(sum)
            | "KeyByVocabulary" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1], kv[0][2])))
            | "GroupFrequencies" >> beam.GroupByKey()
            | "SortFrequencies"
            >> beam.FlatMapTuple(_frequencies).with_outputs(UNSTORABLE, main="frequencies")
        )
        if len(self._config.vocabularies()) < 2:
            overlaps = batches.pipeline | "NoOverlaps" >> beam.Create([])
        else:
            overlaps = (
                per_token
                | "KeyByToken" >> beam.Map(lambda kv: (kv[0][1], (kv[0][0], kv[1])))
                | "GroupVocabularies" >> beam.GroupByKey()
                | "SharedPairs" >> beam.FlatMap(_shared_pairs)
                | "SumShared" >> beam.CombinePerKey(_sum_tuples)
                | "ListSums" >> beam.MapTuple(lambda pair, sums: (pair, list(sums)))
            )
        return {
            "frequencies": frequencies.frequencies,
            UNSTORABLE: frequencies[UNSTORABLE],
            "overlaps": overlaps,
            "per_token": per_token,
        }


def feature_token_counts(
    batch: pa.RecordBatch, config: Config
) -> Iterator[tuple[tuple[str, bytes, str], int]]:
    """((vocabulary, token, feature), count) for every distinct token of each feature."""
    for vocabulary, features in config.vocabularies().items():
        for name in features:
            values = pc.list_flatten(batch.column(batch.schema.get_field_index(name)))
            for token, count in _distinct_counts(values):
                yield (vocabulary, token, name), count


def _unseen(joined, thresholds: dict[str, int], smallest: dict):
    """((vocabulary, token), {"train": [count], "eval": [(feature, count), ...]}) ->
    ((vocabulary, feature), (eval tokens, of them unseen in training, of them out of the
    vocabulary)). `smallest`: vocabulary -> its smallest (count, token) entry, or None
    (`analyzers.WriteVocabulary`)."""
    (vocabulary, token), grouped = joined
    train = sum(grouped["train"])
    kept = smallest.get(vocabulary)
    inside = (
        kept is not None
        and train >= thresholds[vocabulary]
        and in_text_file(token)
        and (train, token) >= tuple(kept)
    )
    for feature, count in grouped["eval"]:
        yield (vocabulary, feature), (count, count if train == 0 else 0, 0 if inside else count)


class MeasureEvalSkew(beam.PTransform):
    """(training tokens, eval record batches) -> per feature how many of its eval tokens the
    training split never saw.

    The input is a triple: `CountFrequencies(...)["per_token"]` over the training split, the
    eval split's record batches, and each vocabulary's smallest entry
    (`analyzers.vocabularies`). Output: ((vocabulary, feature), [eval tokens, unseen in
    training, out of the vocabulary]). A feature whose eval
    values are almost all unseen (the split key used as a feature: every eval user is new)
    only ever looks up its OOV row outside training; the planner drops it.
    """

    def __init__(self, config: Config):
        super().__init__()
        self._config = config

    def expand(self, inputs):
        train_tokens, eval_batches, smallest = inputs
        thresholds = {
            name: self._config.vocabulary_config(name).frequency_threshold
            for name in self._config.vocabularies()
        }
        eval_tokens = (
            eval_batches
            | "EvalTokenCounts" >> beam.FlatMap(feature_token_counts, self._config)
            | "SumPerEvalToken" >> beam.CombinePerKey(sum)
            | "KeyByToken" >> beam.MapTuple(lambda key, n: ((key[0], key[1]), (key[2], n)))
        )
        return (
            {"train": train_tokens, "eval": eval_tokens}
            | "JoinTrainTokens" >> beam.CoGroupByKey()
            | "Unseen" >> beam.FlatMap(_unseen, thresholds, beam.pvalue.AsDict(smallest))
            | "SumUnseen" >> beam.CombinePerKey(_sum_tuples)
            | "ListUnseen" >> beam.MapTuple(lambda key, sums: (key, list(sums)))
        )
