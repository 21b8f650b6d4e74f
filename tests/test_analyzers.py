"""The vocabularies and z-scores taken from the pipeline's own counts are tf.Transform's own.

The same record batches are analyzed in real Beam pipelines three ways: by `tft.vocabulary` and
`tft.scale_to_z_score` (the reference), by the pipeline's analyzers fed the first pass's
measurements over no rows (as pipeline/graph.py wires them), and by the same analyzers
counting the analyzed batches themselves (as tf.Transform's test harness runs them). The
vocabulary files must be the same bytes, the asset map the same, and every transformed value
the same: ties at the top_k cut, frequency thresholds, a vocabulary shared by two features,
unicode and non-UTF-8 tokens, empty tokens and tokens with line breaks (tf.Transform leaves
them out of a text file), a vocabulary left empty by its threshold.
"""

from __future__ import annotations

import random

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.options.pipeline_options import PipelineOptions
from tensorflow_transform import analyzers as tft_analyzers

from common.config import parse_config
from pipeline import analyzers, features, measure
from pipeline.decode import to_record_batch
from pipeline.local_runner import default_runner
from pipeline.preprocessing import PreprocessingFn

pytestmark = pytest.mark.pipeline_env

CONFIG = parse_config(
    {
        "split": {"key": "user_id"},
        "label": {"name": "clicked"},
        "feature": [
            {"name": "item_id", "type": "categorical", "vocabulary": "item ids.v2"},
            {"name": "history", "type": "sequence", "vocabulary": "item ids.v2"},
            {"name": "region", "type": "categorical"},
            {"name": "tags", "type": "bag"},
            {"name": "rare", "type": "categorical"},
            {"name": "price", "type": "numeric"},
        ],
        "vocabulary": {
            "top_k": 6,
            "num_oov_buckets": 2,
            "region": {"top_k": 100, "frequency_threshold": 3},
            "tags": {"top_k": 5, "frequency_threshold": 2},
            "rare": {"frequency_threshold": 1000, "num_oov_buckets": 1},
        },
        "embedding": {"dimension": 8},
    }
)
ITEMS = [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h", b"ab", b"B", "é".encode(), b"\xff\xfe"]
POPULAR = ["é".encode(), b"\xff\xfe", b"ab", b"B"]
ODD = [b"", b"x\ny", b"\r", b"z\r\n"]
TAGS = ["日本".encode(), "ß".encode(), "Ω".encode(), b"tag", b"tag ", b"\x00\x01", b"T"]


def _rows(count: int, seed: int) -> list[dict]:
    """Rows whose small vocabularies tie often (few distinct tokens, few rows)."""
    rng = random.Random(seed)
    regions = random.Random(seed + 1)  # long tailed: counts on both sides of the threshold
    rows = []
    for i in range(count):
        history = rng.choices(ITEMS + ODD, k=rng.randrange(0, 6))
        rows.append(
            {
                "item_id": [rng.choice(POPULAR + ODD[:2])],
                "history": history,
                "region": [f"r{int(regions.expovariate(0.3))}".encode()],
                "tags": rng.sample(TAGS, k=rng.randrange(0, 4)),
                "rare": [f"v{i}".encode()],
                "price": [np.float32(rng.choice([0.1, 2.5, -3.75, 1e-3, 7.0, 123.456]))],
                "clicked": [np.float32(rng.randrange(2))],
            }
        )
    return rows


def _batches() -> list[pa.RecordBatch]:
    schema = features.tensor_adapter_config(CONFIG).arrow_schema
    rows = _rows(240, seed=395)
    return [to_record_batch(rows[i : i + 50], schema) for i in range(0, len(rows), 50)]


def _values(tensor):
    return tensor.values if isinstance(tensor, tf.SparseTensor) else tensor


def _reference_fn(weighted: bool):
    """The preprocessing_fn with tf.Transform's own analyzers."""

    def preprocessing_fn(inputs):
        outputs = {}
        for vocabulary, names in CONFIG.vocabularies().items():
            settings = CONFIG.vocabulary_config(vocabulary)
            tokens = tf.concat([_values(inputs[name]) for name in names], axis=0)
            path = tft.vocabulary(
                tokens,
                weights=tf.ones(tf.shape(tokens), tf.float32) if weighted else None,
                top_k=settings.top_k,
                frequency_threshold=settings.frequency_threshold
                if settings.frequency_threshold > 1
                else None,
                vocab_filename=vocabulary,
            )
            for name in names:
                outputs[name] = tft.apply_vocabulary(
                    inputs[name], path, num_oov_buckets=settings.num_oov_buckets
                )
        scaled = tft.scale_to_z_score(tf.cast(inputs["price"], tf.float64))
        outputs["price"] = tf.cast(scaled, tf.float32)
        outputs["clicked"] = inputs["clicked"]
        return outputs

    return preprocessing_fn


def _run(tmp_path, name, analyze):
    """Runs `analyze(pipeline, batches) -> transform_fn`, transforms the batches with it and
    returns (the written transform output, the transformed rows)."""
    output = str(tmp_path / name)
    adapter_config = features.tensor_adapter_config(CONFIG)
    options = PipelineOptions([])
    with beam.Pipeline(runner=default_runner(options), options=options) as p:
        with tft_beam.Context(temp_dir=str(tmp_path / f"{name}-tmp")):
            batches = p | "Batches" >> beam.Create(_batches(), reshuffle=False)
            transform_fn = analyze(p, batches, adapter_config)
            _ = transform_fn | tft_beam.WriteTransformFn(output)
            transformed, _ = ((batches, adapter_config), transform_fn) | tft_beam.TransformDataset()
            _ = (
                transformed
                | beam.Map(_canonical)
                | beam.io.WriteToText(str(tmp_path / f"{name}-rows"), shard_name_template="")
            )
    rows = sorted(open(tmp_path / f"{name}-rows").read().splitlines())
    return tft.TFTransformOutput(output), rows


def _canonical(row: dict) -> str:
    return repr(sorted((key, np.asarray(value).tolist()) for key, value in row.items()))


def _reference(weighted):
    def analyze(p, batches, adapter_config):
        return (batches, adapter_config) | tft_beam.AnalyzeDataset(_reference_fn(weighted))

    return analyze


def _measured(p, batches, adapter_config):
    """As pipeline/graph.py: the first pass's measurements, tf.Transform's analysis over no
    rows."""
    counted = batches | "CountTokens" >> measure.CountFrequencies(CONFIG)
    moments = batches | "MeasureTrain" >> beam.CombineGlobally(measure.MeasureBatches(CONFIG))
    no_rows = p | "NoRows" >> beam.Create([]).with_output_types(pa.RecordBatch)
    fn = PreprocessingFn(CONFIG, analyzers.Measurements(counted["per_token"], moments))
    return (no_rows, adapter_config) | tft_beam.AnalyzeDataset(fn)


def _self_counted(p, batches, adapter_config):
    return (batches, adapter_config) | tft_beam.AnalyzeDataset(PreprocessingFn(CONFIG))


def _vocabulary_files(output: tft.TFTransformOutput) -> dict[str, bytes]:
    return {
        name: open(output.vocabulary_file_by_name(name), "rb").read()
        for name in CONFIG.vocabularies()
    }


@pytest.mark.slow
@pytest.mark.parametrize("weighted", [False, True], ids=["counts", "unit-weights"])
def test_vocabularies_and_z_scores_are_tf_transforms(tmp_path, weighted):
    reference, reference_rows = _run(tmp_path, "reference", _reference(weighted))
    expected = _vocabulary_files(reference)
    # The data exercises what it is meant to: a tie across the top_k cut of the shared
    # vocabulary, tokens a text file cannot hold, a vocabulary its threshold empties.
    counts = {}
    for batch in _batches():
        for (vocabulary, token), count in measure.token_counts(batch, CONFIG):
            counts[(vocabulary, token)] = counts.get((vocabulary, token), 0) + count
    items = sorted(
        (count for (v, t), count in counts.items() if v == "item ids.v2" and t not in ODD),
        reverse=True,
    )
    assert items[5] == items[6]
    regions = {count for (v, _), count in counts.items() if v == "region"}
    assert 3 in regions and min(regions) < 3
    assert all(counts.get(("item ids.v2", token)) for token in ODD)
    assert expected["rare"] == analyzers.EMPTY_VOCABULARY_ENTRY + b"\n"
    assert b"\xff\xfe\n" in expected["item ids.v2"] and "é".encode() in expected["item ids.v2"]
    assert len(expected["item ids.v2"].splitlines()) == 6
    assert reference.vocabulary_file_by_name("item ids.v2").endswith("/assets/item-ids_v2")

    for name, analyze in (("measured", _measured), ("self-counted", _self_counted)):
        output, rows = _run(tmp_path, name, analyze)
        assert _vocabulary_files(output) == expected, name
        assert open(output.vocabulary_file_by_name("item ids.v2"), "rb").name.endswith(
            "/assets/item-ids_v2"
        )
        assert rows == reference_rows, name


def test_the_empty_vocabulary_entry_is_tf_transforms():
    # tf.Transform's own placeholder (a private function: this fails on an upgrade that
    # changes it).
    assert tft_analyzers.get_empy_vocabulary_dummy_value(tf.string) == (
        1,
        analyzers.EMPTY_VOCABULARY_ENTRY,
    )
    assert analyzers.vocabulary_lines([]) == analyzers.EMPTY_VOCABULARY_ENTRY + b"\n"
    assert analyzers.vocabulary_lines([(3, b"b"), (3, b"a")]) == b"b\na\n"


@pytest.mark.parametrize(
    "token, kept",
    [(b"a", True), ("日本".encode(), True), (b"", False), (b"a\nb", False), (b"\r", False)],
)
def test_a_text_vocabulary_holds_no_empty_token_and_no_line_break(token, kept):
    assert measure.in_text_file(token) is kept
