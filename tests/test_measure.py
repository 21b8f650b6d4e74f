"""The Beam measurement transforms on hand-made record batches (TestPipeline + assert_that)."""

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from common.config import parse_config
from pipeline import features
from pipeline.decode import CsvRowDecoder, to_record_batch
from pipeline.measure import CountFrequencies, MeasureBatches

CONFIG = parse_config(
    {
        "split": {"key": "u"},
        "label": {"name": "y"},
        "feature": [
            {"name": "item", "type": "categorical", "vocabulary": "items"},
            {"name": "history", "type": "sequence", "vocabulary": "items"},
            {"name": "tags", "type": "sequence"},
            {"name": "price", "type": "numeric"},
        ],
    }
)
HEADER = ["u", "item", "history", "tags", "price", "y"]


def batch(lines):
    decoder = CsvRowDecoder(CONFIG, HEADER)
    schema = features.tensor_adapter_config(CONFIG).arrow_schema
    return to_record_batch([decoder.decode(line)[1] for line in lines], schema)


BATCHES = [
    batch(["u1,a,a b,a x,1,1", "u2,b,,x,3,0"]),
    batch(["u3,c,a a a,,5,1"]),
]


def test_frequencies_and_overlaps():
    # items: a x5 (item 1 + history 4), b x2, c x1 -> frequencies 5:1, 2:1, 1:1.
    # tags: a x1, x x2 -> 1:1, 2:1. Shared between items and tags: 'a' only.
    with TestPipeline() as p:
        counted = p | beam.Create(BATCHES) | CountFrequencies(CONFIG)
        assert_that(
            counted["frequencies"],
            equal_to([("items", [(1, 1), (2, 1), (5, 1)]), ("tags", [(1, 1), (2, 1)])]),
            label="CheckFrequencies",
        )
        assert_that(counted["overlaps"], equal_to([(("items", "tags"), 1)]), label="CheckOverlaps")


def test_lengths_rows_and_numeric_moments():
    with TestPipeline() as p:
        measured = p | beam.Create(BATCHES) | beam.CombineGlobally(MeasureBatches(CONFIG))
        assert_that(
            measured,
            equal_to(
                [
                    {
                        "rows": 3,
                        "lengths": {
                            "history": {"0": 1, "2": 1, "3": 1},
                            "tags": {"0": 1, "1": 1, "2": 1},
                        },
                        "numeric": {"price": [3, 9 << 149, 35 << 298, 1.0, 5.0]},  # exact sums
                    }
                ]
            ),
        )
