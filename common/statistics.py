"""Exact statistics maths: sequence-length histograms, quantiles, vocabulary coverage.

Pure Python, no TensorFlow, Beam or Arrow: the pipeline feeds it exact counts and the
embedding planner reuses `coverage_length`, so the quantiles in stats.json and the planned
`max_sequence_length` follow one rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

QUANTILES = ("0.5", "0.9", "0.95", "0.99")


def _histogram(histogram: Mapping[Any, int]) -> list[tuple[int, int]]:
    """(length, count) pairs sorted by length, with int keys (JSON gives strings)."""
    return sorted((int(length), int(count)) for length, count in histogram.items() if count)


def coverage_length(histogram: Mapping[Any, int], coverage: float) -> int:
    """The smallest L such that at least `coverage` of the sequences are no longer than L.

    Exact: the share is compared as a fraction of integers, so a coverage of 0.95 over 20
    sequences is met by 19 of them, not missed by a rounding error.

    Args:
      histogram: sequence length -> number of sequences of that length.
      coverage: the share of sequences that must fit, in (0, 1].

    Returns:
      The length; 0 when there are no sequences or all are empty.
    """
    pairs = _histogram(histogram)
    total = sum(count for _, count in pairs)
    if total == 0:
        return 0
    needed = math.ceil(Fraction(repr(float(coverage))) * total)
    seen = 0
    for length, count in pairs:
        seen += count
        if seen >= needed:
            return length
    return pairs[-1][0]


def sequence_summary(histogram: Mapping[Any, int]) -> dict[str, Any]:
    """The stats.json entry of one sequence feature, from its exact length histogram. The
    length figures of no sequences (an empty eval split) are not defined: None."""
    pairs = _histogram(histogram)
    count = sum(c for _, c in pairs)
    ids = sum(length * c for length, c in pairs)
    return {
        "count": count,
        "empty": dict(pairs).get(0, 0),
        "min": pairs[0][0] if pairs else None,
        "max": pairs[-1][0] if pairs else None,
        "mean": ids / count if count else None,
        "ids": ids,
        "quantiles": {
            q: coverage_length(histogram, float(q)) if count else None for q in QUANTILES
        },
        "histogram": {str(length): c for length, c in pairs},
    }


def truncation(histogram: Mapping[Any, int], length: int) -> dict[str, float]:
    """What capping sequences at `length` costs and saves.

    Returns:
      padding_efficiency: real ids kept / (sequences x length), the share of a padded
        [rows, length] batch that holds data (1.0 when length is 0).
      truncated_fraction: share of sequences longer than `length`.
      dropped_id_fraction: share of all ids cut off by the cap.
    """
    pairs = _histogram(histogram)
    count = sum(c for _, c in pairs)
    ids = sum(n * c for n, c in pairs)
    kept = sum(min(n, length) * c for n, c in pairs)
    truncated = sum(c for n, c in pairs if n > length)
    return {
        "padding_efficiency": kept / (count * length) if count and length else 1.0,
        "truncated_fraction": truncated / count if count else 0.0,
        "dropped_id_fraction": (ids - kept) / ids if ids else 0.0,
    }


def vocabulary_summary(
    frequency_counts: Iterable[tuple[int, int]],
    top_k: int,
    frequency_threshold: int,
    unstorable: Sequence[int] = (0, 0),
) -> dict[str, Any]:
    """Vocabulary figures from the frequency of frequencies.

    Which values tf.Transform keeps among values of equal frequency does not change how many
    tokens the kept values cover, so the counts of counts are enough to get the size and the
    out-of-vocabulary share exactly.

    Args:
      frequency_counts: (frequency, number of distinct values seen that often) pairs, of the
        values a vocabulary file can hold.
      top_k: the vocabulary keeps at most this many values, the most frequent.
      frequency_threshold: values seen fewer times are left out.
      unstorable: (tokens, distinct values) of the values no vocabulary file can hold (empty,
        or holding a line break): out of the vocabulary however often they are seen.

    Returns:
      distinct_values, tokens, expected_size (entries after top_k and threshold),
      in_vocabulary_tokens, oov_rate, and coverage: the share of all tokens covered by the
      top k values a vocabulary can hold, for k at powers of two (the coverage curve of the
      report) and at their number.
    """
    pairs = sorted(((int(f), int(n)) for f, n in frequency_counts if n), key=lambda p: -p[0])
    storable = sum(n for _, n in pairs)
    distinct = storable + int(unstorable[1])
    tokens = sum(f * n for f, n in pairs) + int(unstorable[0])
    size = kept_tokens = 0
    for frequency, n in pairs:
        if frequency < frequency_threshold or size >= top_k:
            break
        take = min(n, top_k - size)
        size += take
        kept_tokens += take * frequency
    coverage = {}
    k, covered, ranked = 1, 0, 0
    for frequency, n in pairs:
        while k <= ranked + n:
            coverage[str(k)] = (covered + (k - ranked) * frequency) / tokens
            k *= 2
        ranked += n
        covered += frequency * n
    if storable:
        coverage[str(storable)] = covered / tokens
    return {
        "distinct_values": distinct,
        "tokens": tokens,
        "expected_size": size,
        "in_vocabulary_tokens": kept_tokens,
        "oov_rate": (tokens - kept_tokens) / tokens if tokens else None,
        "coverage": coverage,
    }


SUM_SCALE_BITS = 149
"""Every float32 value is an integer multiple of 2**-149 (its smallest subnormal), so sums of
values times 2**149, and of squares times 2**298, are exact integers: they add up to the same
total in any order, which makes the moments in stats.json independent of how the rows were
split into bundles and workers."""


def mean_and_variance(count: int, total: int, total_sq: int) -> tuple[float, float]:
    """The mean and the (population) variance of a numeric column from its exact sums, each
    computed exactly and rounded once to the nearest float64; (0.0, 0.0) without values.

    The z-scores of the transform graph and the figures of stats.json both come from here.

    Args:
      count: the number of values.
      total: the exact sum of the values times 2**SUM_SCALE_BITS.
      total_sq: the exact sum of their squares times 2**(2 * SUM_SCALE_BITS).
    """
    if not count:
        return 0.0, 0.0
    mean = Fraction(int(total), count << SUM_SCALE_BITS)
    variance = Fraction(int(total_sq), count << (2 * SUM_SCALE_BITS)) - mean * mean
    return float(mean), float(variance)


def numeric_summary(
    count: int, total: int, total_sq: int, low: float, high: float, zeros: int = 0
) -> dict:
    """Count, mean, standard deviation, min, max and zeros of a numeric column.

    Args:
      count: the number of values.
      total: the exact sum of the values times 2**SUM_SCALE_BITS.
      total_sq: the exact sum of their squares times 2**(2 * SUM_SCALE_BITS).
      low, high: the smallest and the largest value.
      zeros: how many values are 0.
    """
    if not count:  # the figures of no values are not defined
        return {"count": 0, "mean": None, "std": None, "min": None, "max": None, "zeros": 0}
    mean, variance = mean_and_variance(count, total, total_sq)
    return {
        "count": count,
        "mean": mean,
        "std": math.sqrt(max(variance, 0.0)),
        "min": low + 0.0,  # -0.0 reads as 0
        "max": high + 0.0,
        "zeros": zeros,
    }


def overlap_summary(sums: Sequence[float], tokens_a: int, tokens_b: int) -> dict[str, Any]:
    """How much two vocabularies look like names of the same things, over their shared values.

    Integer codes of unrelated things (ages 1..60 and item ids 1..2000) share many values by
    accident, so the count of shared distinct values is no evidence. Two views of one
    catalogue (the candidate item and the items of a history) put most of their TOKENS on
    the shared values, on both sides, and rank those values alike (a popular item is popular
    in both). This measures both.

    Args:
      sums: the `pipeline.measure.OVERLAP_FIELDS` sums: shared values, their tokens in a and
        in b, and the sums of x, y, x*x, y*y, x*y with x, y the log frequencies in a and b.
      tokens_a, tokens_b: all tokens of each vocabulary (training split).

    Returns:
      shared_values; token_share_a and token_share_b: the share of each vocabulary's tokens
      that fall on shared values; log_frequency_correlation: the Pearson correlation of the
      log frequencies over the shared values (0.0 when fewer than 3 values are shared or one
      side's frequencies are all equal), rounded to 4 digits so that float sums taken in
      another order give the same stats.json.
    """
    n, shared_a, shared_b, sx, sy, sxx, syy, sxy = sums
    n = int(n)
    correlation = 0.0
    if n >= 3:
        var_x, var_y = n * sxx - sx * sx, n * syy - sy * sy
        if var_x > 1e-9 * n * n and var_y > 1e-9 * n * n:
            correlation = (n * sxy - sx * sy) / math.sqrt(var_x * var_y)
    return {
        "shared_values": n,
        "token_share_a": int(shared_a) / tokens_a if tokens_a else 0.0,
        "token_share_b": int(shared_b) / tokens_b if tokens_b else 0.0,
        "log_frequency_correlation": round(max(-1.0, min(1.0, correlation)), 4),
    }


def unseen_summary(tokens: int, unseen: int, out_of_vocabulary: int) -> dict[str, Any]:
    """The eval split's tokens of one feature or vocabulary against the training split.

    Args:
      tokens: eval tokens.
      unseen: of them, tokens of values the training split never holds.
      out_of_vocabulary: of them, tokens of values out of the vocabulary (seen fewer than
        frequency_threshold times in training, left out by top_k, or no vocabulary file can
        hold them).
    """
    return {
        "tokens": tokens,
        # A share of no tokens is not defined: None (null in stats.json), not 0.
        "unseen_rate": unseen / tokens if tokens else None,
        "oov_rate": out_of_vocabulary / tokens if tokens else None,
    }


BAG_QUANTILE = 0.999
BAG_CAP_FACTOR = 4
"""A bag keeps every id up to its cap: the longest bag measured, unless that is more than
BAG_CAP_FACTOR times the BAG_QUANTILE length, which a few outlying rows would otherwise set
for every batch; then BAG_CAP_FACTOR times that quantile."""


def bag_cap(histogram: Mapping[Any, int]) -> int:
    """The most ids a bag keeps (see BAG_QUANTILE): 0 when every bag is empty."""
    pairs = _histogram(histogram)
    if not pairs:
        return 0
    longest = pairs[-1][0]
    generous = BAG_CAP_FACTOR * max(coverage_length(histogram, BAG_QUANTILE), 1)
    return min(longest, generous)
