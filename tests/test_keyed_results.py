"""Many global results in one Beam combine (pipeline/keyed_results.py), on a real pipeline."""

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipeline.keyed_results import ByKey, Listed, Only, Sum, Tally

pytestmark = pytest.mark.pipeline_env

COMBINERS = {
    "read": Sum(),
    "rejected": Sum(),
    "reasons": Tally(),
    "train": Only(),
    "eval_measured": Only(),
    "skew": Listed(),
}


def test_each_key_gets_its_own_result_and_absent_keys_their_empty_one():
    pairs = [("read", 5), ("read", 7), ("reasons", "too long"), ("reasons", "bad number")]
    pairs += [("reasons", "too long"), ("train", {"rows": 3}), ("skew", ["a", 1])]
    with beam.Pipeline() as p:
        parts = [p | f"Part{i}" >> beam.Create(pairs[i::3], reshuffle=False) for i in range(3)]
        results = parts | beam.Flatten() | beam.CombineGlobally(ByKey(COMBINERS))
        expected = {
            "read": 12,
            "rejected": 0,  # no value: the sum of none
            "reasons": [["bad number", 1], ["too long", 2]],
            "train": {"rows": 3},  # eval_measured had no value: left out
            "skew": [["a", 1]],
        }
        assert_that(results, equal_to([expected]))


def test_two_values_for_one_only_result_fail():
    with pytest.raises(Exception, match="2 values where one was expected"):
        with beam.Pipeline() as p:
            _ = (
                p
                | beam.Create([("train", 1), ("train", 2)], reshuffle=False)
                | beam.CombineGlobally(ByKey(COMBINERS))
            )
