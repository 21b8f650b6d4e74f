"""The Beam measurement transforms on hand-made record batches (TestPipeline + assert_that)."""

import math

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from common import statistics
from common.config import parse_config
from embedding.planner import sharing_suggestions
from pipeline import features
from pipeline.decode import CsvRowDecoder, to_record_batch
from pipeline.measure import CountFrequencies, MeasureBatches, MeasureEvalSkew

pytestmark = pytest.mark.pipeline_env

CONFIG_DATA = {
    "split": {"key": "u"},
    "label": {"name": "y"},
    "feature": [
        {"name": "item", "type": "categorical", "vocabulary": "items"},
        {"name": "history", "type": "sequence", "vocabulary": "items"},
        {"name": "tags", "type": "sequence"},
        {"name": "price", "type": "numeric"},
    ],
}
CONFIG = parse_config(CONFIG_DATA)
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
        # 'a' is shared: 5 tokens in items, 1 in tags; x = log 5, y = log 1 = 0.
        five = math.log(5)
        assert_that(
            counted["overlaps"],
            equal_to([(("items", "tags"), [1, 5, 1, five, 0.0, five * five, 0.0, 0.0])]),
            label="CheckOverlaps",
        )


def test_values_no_vocabulary_file_holds_are_counted_apart():
    # items: a x2, "x\ny" x3 (one value seen 3 times), "\r" x1; tags: nothing odd.
    schema = features.tensor_adapter_config(CONFIG).arrow_schema
    rows = [
        {"u": [b"u1"], "item": [b"a"], "history": [b"x\ny", b"a", b"\r"], "tags": [b"t"]},
        {"u": [b"u2"], "item": [b"x\ny"], "history": [b"x\ny"], "tags": [b"t"]},
    ]
    rows = [{**row, "price": [1.0], "y": [0.0]} for row in rows]
    with TestPipeline() as p:
        counted = p | beam.Create([to_record_batch(rows, schema)]) | CountFrequencies(CONFIG)
        assert_that(
            counted["frequencies"],
            equal_to([("items", [(2, 1)]), ("tags", [(2, 1)])]),
            label="CheckFrequencies",
        )
        # 4 tokens of 2 values, for items only.
        assert_that(counted["unstorable"], equal_to([("items", [4, 2])]), label="CheckApart")


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
                        # exact sums; then min, max and zeros; the label's too
                        "numeric": {
                            "price": [3, 9 << 149, 35 << 298, 1.0, 5.0, 0],
                            "y": [3, 2 << 149, 2 << 298, 0.0, 1.0, 1],
                        },
                    }
                ]
            ),
        )


def test_eval_tokens_unseen_in_training_are_counted_per_feature():
    config = parse_config({**CONFIG_DATA, "vocabulary": {"tags": {"frequency_threshold": 2}}})
    # Training tokens: items a x5, b x2, c x1; tags a x1, x x2 (see BATCHES).
    eval_batches = [batch(["u4,a,c d d,x a z,2,1"]), batch(["u5,e,,x,1,0"])]
    with TestPipeline() as p:
        train_tokens = p | "Train" >> beam.Create(BATCHES) | CountFrequencies(config)
        evaluated = p | "Eval" >> beam.Create(eval_batches)
        skew = (train_tokens["per_token"], evaluated, _smallest(train_tokens, config)) | (
            MeasureEvalSkew(config)
        )
        # item: a (seen), e (unseen). history: c (seen once), d d (unseen).
        # tags: x (seen twice), a (seen once: below the threshold 2), z (unseen), x.
        assert_that(
            skew,
            equal_to(
                [
                    (("items", "item"), [2, 1, 1]),
                    (("items", "history"), [3, 2, 2]),
                    (("tags", "tags"), [4, 1, 2]),
                ]
            ),
        )


def _smallest(counted, config):
    """Each vocabulary's smallest entry, as the pipeline's vocabulary files give it."""
    import tempfile

    from pipeline.analyzers import vocabularies

    directory = tempfile.mkdtemp()
    return vocabularies(counted["per_token"], config, directory)[1]


def test_eval_tokens_that_top_k_leaves_out_are_out_of_the_vocabulary():
    # items: b x1 and c x1 in training, a tie that top_k = 1 breaks by token, descending:
    # the vocabulary is [c]. tags: x x2, a x1, top_k = 1: [x].
    config = parse_config(
        {**CONFIG_DATA, "vocabulary": {"items": {"top_k": 1}, "tags": {"top_k": 1}}}
    )
    train = [batch(["u1,b,c,x x a,1,1"])]
    eval_batches = [batch(["u4,c,b c b,x a,2,1"])]
    with TestPipeline() as p:
        counted = p | "Train" >> beam.Create(train) | CountFrequencies(config)
        evaluated = p | "Eval" >> beam.Create(eval_batches)
        smallest = _smallest(counted, config)
        assert_that(
            smallest, equal_to([("items", (1, b"c")), ("tags", (2, b"x"))]), label="Smallest"
        )
        skew = (counted["per_token"], evaluated, smallest) | MeasureEvalSkew(config)
        # item c: in. history b c b: both b out. tags x a: a out (seen, but cut).
        assert_that(
            skew,
            equal_to(
                [
                    (("items", "item"), [1, 0, 0]),
                    (("items", "history"), [3, 0, 2]),
                    (("tags", "tags"), [2, 0, 1]),
                ]
            ),
        )


def _zipf(rng, n, size):
    p = 1.0 / np.arange(1, n + 1)
    return rng.choice(n, size=size, p=p / p.sum()) + 1


def _judge(overlaps, frequencies):
    """The planner's sharing suggestions from the measured overlaps and frequencies."""
    tokens = {v: sum(f * n for f, n in pairs) for v, pairs in frequencies}
    stats = {
        "vocabulary_overlaps": [
            {
                "vocabularies": list(pair),
                **statistics.overlap_summary(sums, *(tokens[v] for v in pair)),
            }
            for pair, sums in overlaps
        ]
    }
    return sharing_suggestions(stats)


def _check_suggestions(columns, types, vocabularies, check):
    """Measures record batches of `columns` (name -> list of id lists) with CountFrequencies
    in Beam and calls `check` with the planner's sharing suggestions."""
    config = parse_config(
        {
            "split": {"key": "u"},
            "label": {"name": "y"},
            "feature": [
                {"name": name, "type": types[name], "vocabulary": vocabularies[name]}
                for name in columns
            ],
        }
    )
    schema = features.tensor_adapter_config(config).arrow_schema
    rows = [
        {
            **{name: [str(v).encode() for v in values[i]] for name, values in columns.items()},
            "y": [0.0],
        }
        for i in range(len(next(iter(columns.values()))))
    ]
    batches = [to_record_batch(rows[i : i + 500], schema) for i in range(0, len(rows), 500)]
    with TestPipeline() as p:
        counted = p | beam.Create(batches) | CountFrequencies(config)
        overlaps = counted["overlaps"] | "Overlaps" >> beam.combiners.ToList()
        frequencies = counted["frequencies"] | "Frequencies" >> beam.combiners.ToList()
        notes = overlaps | beam.Map(_judge, beam.pvalue.AsSingleton(frequencies))
        assert_that(notes, lambda actual: check(actual[0]))


def test_unrelated_integer_codes_get_no_sharing_suggestion():
    # Ages 1..60 and user ids 1..900 are all item ids too, and the popular items have low
    # ids, so the shared values hold all the ages' tokens and over half the items'; by
    # frequencies the columns have nothing in common.
    rng = np.random.default_rng(5)
    rows = 3000
    columns = {
        "age": [[v] for v in rng.integers(1, 61, rows)],
        "user": [[v] for v in rng.integers(1, 901, rows)],
        "item": [[v] for v in _zipf(rng, 2000, rows)],
    }
    types = dict.fromkeys(columns, "categorical")
    _check_suggestions(columns, types, {name: name for name in columns}, _no_notes)


def test_two_views_of_one_catalogue_get_a_sharing_suggestion():
    rng = np.random.default_rng(6)
    rows = 3000
    catalogue = rng.permutation(2000) + 1  # popularity unrelated to the id's number
    columns = {
        "item": [[catalogue[v - 1]] for v in _zipf(rng, 2000, rows)],
        "history": [list(catalogue[_zipf(rng, 2000, 5) - 1]) for _ in range(rows)],
    }
    types = {"item": "categorical", "history": "sequence"}
    _check_suggestions(
        columns, types, {"item": "items", "history": "history_items"}, _one_shared_catalogue
    )


def _no_notes(notes):
    assert notes == []


def _one_shared_catalogue(notes):
    assert len(notes) == 1
    assert "'history_items' and 'items' look like names of the same things" in notes[0]
