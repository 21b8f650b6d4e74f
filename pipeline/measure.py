"""Vectorized measurement of raw record batches, as Beam combiners.

Each record batch is measured with pyarrow and numpy in one go (lengths, numeric moments,
per-batch token counts), so the per-row Python cost stays in parsing alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common import statistics
from common.config import Config


def _empty() -> dict[str, Any]:
    return {"rows": 0, "lengths": {}, "numeric": {}}


def measure_batch(batch: pa.RecordBatch, config: Config) -> dict[str, Any]:
    """Row count, per-sequence length counts and per-numeric moments of one batch."""
    result = _empty()
    result["rows"] = batch.num_rows
    for feature in config.features:
        column = batch.column(batch.schema.get_field_index(feature.name))
        if feature.type == "sequence":
            lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
            counts = np.bincount(lengths.astype(np.int64)) if len(lengths) else []
            result["lengths"][feature.name] = Counter(
                {int(n): int(c) for n, c in enumerate(counts) if c}
            )
        elif feature.type == "numeric":
            values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
            result["numeric"][feature.name] = (
                [len(values), *exact_sums(values), float(values.min()), float(values.max())]
                if len(values)
                else [0, 0, 0, float("inf"), float("-inf")]
            )
    return result


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
    for name, (n, s, sq, lo, hi) in b["numeric"].items():
        if name in a["numeric"]:
            n0, s0, sq0, lo0, hi0 = a["numeric"][name]
            a["numeric"][name] = [n0 + n, s0 + s, sq0 + sq, min(lo0, lo), max(hi0, hi)]
        else:
            a["numeric"][name] = [n, s, sq, lo, hi]
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


def token_counts(batch: pa.RecordBatch, config: Config) -> Iterator[tuple[tuple[str, bytes], int]]:
    """((vocabulary, token), count) for every distinct token of each vocabulary in a batch."""
    for vocabulary, features in config.vocabularies().items():
        values = pa.concat_arrays(
            [pc.list_flatten(batch.column(batch.schema.get_field_index(name))) for name in features]
        )
        if len(values) == 0:
            continue
        counted = pc.value_counts(values)
        tokens = counted.field("values").to_pylist()
        counts = counted.field("counts").to_pylist()
        for token, count in zip(tokens, counts, strict=True):
            yield (vocabulary, token), count


def _shared_pairs(token_vocabularies):
    """(token, [vocabularies holding it]) -> one (a, b) per pair of those vocabularies."""
    _, vocabularies = token_vocabularies
    names = sorted(set(vocabularies))
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            yield (a, b)


class CountFrequencies(beam.PTransform):
    """Record batches -> per vocabulary the frequency of frequencies, and value overlaps.

    Outputs a dict of PCollections:
      frequencies: (vocabulary, [(frequency, distinct values seen that often), ...]).
      overlaps: ((vocabulary a, vocabulary b), number of distinct values both hold).
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
            | "KeyByFrequency" >> beam.Map(lambda kv: ((kv[0][0], kv[1]), 1))
            | "CountPerFrequency" >> beam.CombinePerKey(sum)
            | "KeyByVocabulary" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1])))
            | "GroupFrequencies" >> beam.GroupByKey()
            | "SortFrequencies" >> beam.MapTuple(lambda vocab, pairs: (vocab, sorted(pairs)))
        )
        if len(self._config.vocabularies()) < 2:
            overlaps = batches.pipeline | "NoOverlaps" >> beam.Create([])
        else:
            overlaps = (
                per_token
                | "KeyByToken" >> beam.Map(lambda kv: (kv[0][1], kv[0][0]))
                | "GroupVocabularies" >> beam.GroupByKey()
                | "SharedPairs" >> beam.FlatMap(_shared_pairs)
                | "CountShared" >> beam.combiners.Count.PerElement()
            )
        return {"frequencies": frequencies, "overlaps": overlaps}
