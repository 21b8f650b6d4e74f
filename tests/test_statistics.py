import logging

import pytest

from common.statistics import (
    SUM_SCALE_BITS,
    bag_cap,
    coverage_length,
    numeric_summary,
    overlap_summary,
    sequence_summary,
    truncation,
    unseen_summary,
    vocabulary_summary,
)


def test_coverage_exactly_met_at_the_boundary():
    # 19 of 20 sequences have length <= 3: exactly 95%.
    histogram = {"1": 10, "3": 9, "50": 1}
    assert coverage_length(histogram, 0.95) == 3
    assert coverage_length(histogram, 0.951) == 50
    assert coverage_length(histogram, 1.0) == 50


def test_coverage_of_empty_and_all_empty_histograms():
    assert coverage_length({}, 0.95) == 0
    assert coverage_length({"0": 7}, 0.95) == 0


def test_coverage_with_a_tie_takes_the_smallest_length():
    # 50% are <= 2 exactly; the 0.5 quantile is 2, not 3.
    assert coverage_length({2: 5, 3: 5}, 0.5) == 2


def test_sequence_summary():
    summary = sequence_summary({"0": 2, "1": 3, "4": 5})
    assert summary["count"] == 10
    assert summary["empty"] == 2
    assert (summary["min"], summary["max"]) == (0, 4)
    assert summary["mean"] == pytest.approx((3 + 20) / 10)
    assert summary["quantiles"] == {"0.5": 1, "0.9": 4, "0.95": 4, "0.99": 4}
    assert summary["histogram"] == {"0": 2, "1": 3, "4": 5}
    # No sequences (an empty eval split): no length figure is defined.
    none = sequence_summary({})
    assert (none["count"], none["ids"], none["min"], none["max"], none["mean"]) == (
        0,
        0,
        None,
        None,
        None,
    )
    assert set(none["quantiles"].values()) == {None}


def test_truncation_costs():
    cost = truncation({"1": 2, "4": 2}, 2)
    # kept ids: 1+1+2+2 = 6 of 10; padded cells: 4 rows x 2.
    assert cost["padding_efficiency"] == pytest.approx(6 / 8)
    assert cost["truncated_fraction"] == pytest.approx(0.5)
    assert cost["dropped_id_fraction"] == pytest.approx(4 / 10)
    assert truncation({"0": 3}, 0)["padding_efficiency"] == 1.0


def test_vocabulary_summary_top_k_and_threshold():
    # frequencies: one value seen 10 times, two seen 5 times, three seen once.
    counts = [(10, 1), (5, 2), (1, 3)]
    full = vocabulary_summary(counts, top_k=100, frequency_threshold=1)
    assert full["distinct_values"] == 6
    assert full["tokens"] == 23
    assert full["expected_size"] == 6
    assert full["oov_rate"] == 0.0
    thresholded = vocabulary_summary(counts, top_k=100, frequency_threshold=2)
    assert thresholded["expected_size"] == 3
    assert thresholded["oov_rate"] == pytest.approx(3 / 23)
    # top_k cuts inside a tie: which of the two 5s is kept does not change the coverage.
    top2 = vocabulary_summary(counts, top_k=2, frequency_threshold=1)
    assert top2["expected_size"] == 2
    assert top2["in_vocabulary_tokens"] == 15
    assert top2["coverage"]["1"] == pytest.approx(10 / 23)
    assert top2["coverage"]["2"] == pytest.approx(15 / 23)
    assert top2["coverage"]["4"] == pytest.approx(21 / 23)
    assert top2["coverage"]["6"] == 1.0


def test_vocabulary_summary_counts_values_no_file_holds_as_out_of_vocabulary():
    # Storable: one value seen 10 times, three seen once; 6 tokens of 2 values no vocabulary
    # file can hold, one of them the most frequent value of all.
    summary = vocabulary_summary([(10, 1), (1, 3)], 100, 1, unstorable=(6, 2))
    assert summary["distinct_values"] == 6
    assert summary["tokens"] == 19
    assert summary["expected_size"] == 4
    assert summary["in_vocabulary_tokens"] == 13
    assert summary["oov_rate"] == pytest.approx(6 / 19)
    assert summary["coverage"] == {"1": 10 / 19, "2": 11 / 19, "4": 13 / 19}
    assert vocabulary_summary([], 100, 1, unstorable=(3, 1))["oov_rate"] == 1.0


def test_numeric_summary():
    scale = 2**SUM_SCALE_BITS
    summary = numeric_summary(4, 10 * scale, 30 * scale**2, 1.0, 4.0)  # values 1, 2, 3, 4
    assert summary["mean"] == 2.5
    assert summary["std"] == pytest.approx(1.118034, rel=1e-6)
    # The figures of no values are not defined: null in stats.json, not a made-up 0.
    assert numeric_summary(0, 0, 0, float("inf"), float("-inf")) == {
        "count": 0,
        "mean": None,
        "std": None,
        "min": None,
        "max": None,
        "zeros": 0,
    }


@pytest.mark.pipeline_env
def test_exact_sums_do_not_depend_on_order_or_grouping():
    import numpy as np

    from pipeline.measure import exact_sums

    rng = np.random.default_rng(3)
    values = np.concatenate(
        [rng.normal(0, 1e6, 5000), rng.normal(0, 1e-6, 5000), [3.4e38, -3.4e38, 1e-45, 0.0]]
    ).astype(np.float32)
    whole = exact_sums(values)
    shuffled = values.copy()
    rng.shuffle(shuffled)
    parts = [exact_sums(part) for part in np.array_split(shuffled, 7)]
    assert whole == (sum(p[0] for p in parts), sum(p[1] for p in parts))
    scale = 2**SUM_SCALE_BITS
    small = np.array([0.1, 0.2, 0.3], np.float32)
    assert exact_sums(small)[0] == sum(int(v * scale) for v in small.astype(np.float64))
    summary = numeric_summary(3, *exact_sums(small), 0.1, 0.3)
    assert summary["mean"] == float(small.astype(np.float64).sum() / 3)
    # Float summation of the same values in two orders differs; the exact sums do not.
    assert float(np.sum(values.astype(np.float64))) != float(np.sum(shuffled.astype(np.float64)))


def _overlap_sums(pairs):
    """The OVERLAP_FIELDS sums of (frequency in a, frequency in b) pairs, as Beam adds them."""
    import math

    sums = [0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0]
    for fa, fb in pairs:
        x, y = math.log(fa), math.log(fb)
        for i, v in enumerate((1, fa, fb, x, y, x * x, y * y, x * y)):
            sums[i] += v
    return sums


def test_overlap_summary_against_numpy():
    import numpy as np

    rng = np.random.default_rng(2)
    pairs = [(int(a), int(a * rng.integers(1, 4))) for a in rng.integers(1, 50, 300)]
    summary = overlap_summary(_overlap_sums(pairs), 20_000, 50_000)
    x, y = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    assert summary["shared_values"] == 300
    assert summary["token_share_a"] == sum(p[0] for p in pairs) / 20_000
    assert summary["token_share_b"] == sum(p[1] for p in pairs) / 50_000
    assert summary["log_frequency_correlation"] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-4)
    # No spread on one side, or too few values: no evidence of agreement.
    assert (
        overlap_summary(_overlap_sums([(1, 5), (1, 7), (1, 9)]), 3, 21)["log_frequency_correlation"]
        == 0.0
    )
    assert (
        overlap_summary(_overlap_sums([(1, 5), (2, 7)]), 3, 12)["log_frequency_correlation"] == 0.0
    )


def test_unseen_summary_and_bag_cap():
    assert unseen_summary(200, 50, 60) == {"tokens": 200, "unseen_rate": 0.25, "oov_rate": 0.3}
    # A share of no tokens is not defined: None, not an invented 0.
    assert unseen_summary(0, 0, 0) == {"tokens": 0, "unseen_rate": None, "oov_rate": None}
    assert vocabulary_summary([], 10, 1)["oov_rate"] is None
    assert bag_cap({}) == 0 and bag_cap({"0": 5}) == 0
    assert bag_cap({"2": 10, "7": 1}) == 7  # the longest, when not an outlier
    assert bag_cap({"2": 9999, "100": 1}) == 8  # 4 x the 99.9% quantile


@pytest.mark.pipeline_env
def test_numbers_too_large_for_float32_are_warned_of(caplog):
    # A tf.Example holds numbers as float32: timestamps in seconds keep steps of 128.
    from pipeline.run import warn_of_float32

    numeric = {
        "ts": {"count": 5, "min": 1_700_000_000.0, "max": 1_700_002_944.0},
        "price": {"count": 3, "min": -16_777_216.0, "max": 99.5},  # 2**24: still exact
        "empty": {"count": 0, "min": None, "max": None},
    }
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        warn_of_float32({"numeric": numeric})
    (warning,) = caplog.messages
    assert warning.startswith("numeric feature ts: values up to 1.700003e+09 are held as float32")
    assert "keeps steps of 128" in warning


@pytest.mark.pipeline_env
def test_the_report_shows_a_large_numbers_figures_whole():
    from pipeline.report import _number

    # A timestamp's mean, min and max read 1.7e+09, all three, at 4 significant digits.
    assert [_number(v) for v in (1_700_001_488.387, 1_700_000_000.0, 873.73, None)] == [
        "1,700,001,488",
        "1,700,000,000",
        "873.7",
        "n/a",
    ]
