"""The run's figures collected in one combining step: sums, lists and single values."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.graph import Collect

pytestmark = pytest.mark.pipeline_env


def _sorted_lists(figures):
    return {k: sorted(v) if isinstance(v, list) else v for k, v in figures.items()}


def test_sums_lists_and_single_values():
    pairs = [("read", 3), ("reasons", ("bad", 2)), ("read", 4), ("train", {"rows": 5})]
    pairs += [("reasons", ("empty", 1)), ("rejected", 1), ("read", 0)]
    with TestPipeline() as p:
        figures = (
            p
            | beam.Create(pairs)
            | beam.CombineGlobally(Collect(summed=["read", "rejected"], listed=["reasons"]))
            | beam.Map(_sorted_lists)
        )
        expected = {
            "read": 7,
            "rejected": 1,
            "reasons": [("bad", 2), ("empty", 1)],
            "train": {"rows": 5},
        }
        assert_that(figures, equal_to([expected]))


def test_without_input_sums_are_zero_and_lists_empty():
    with TestPipeline() as p:
        figures = (
            p
            | beam.Create([]).with_output_types(tuple[str, int])
            | beam.CombineGlobally(Collect(summed=["train", "eval"], listed=["reasons"]))
        )
        assert_that(figures, equal_to([{"train": 0, "eval": 0, "reasons": []}]))


def test_merged_accumulators_add_up():
    collect = Collect(summed=["read"], listed=["reasons"])
    parts = [collect.create_accumulator() for _ in range(3)]
    for i, part in enumerate(parts):
        collect.add_input(part, ("read", i + 1))
        collect.add_input(part, ("reasons", i))
    collect.add_input(parts[2], ("eval", 9))
    merged = collect.merge_accumulators(parts)
    assert collect.extract_output(merged) == {"read": 6, "reasons": [0, 1, 2], "eval": 9}
