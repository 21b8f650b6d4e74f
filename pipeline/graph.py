"""The measuring and transforming Beam graph, the same on the DirectRunner and on Dataflow.

Read blocks of raw records -> decode them into Arrow record batches (train, validation, eval,
rejected) -> measure (exact length histograms, token frequencies, moments, the eval split's
skew from train) -> the vocabulary files, from those exact counts, and the transform graph,
traced once from them and the exact moments (pipeline/transform_graph.py: no tf.Transform
analysis pass); the decoded batches, kept on disk
meanwhile (pipeline/spill.py) -> ids and z-scores, column-wise with the transform graph's
own vocabulary tables and checked against the graph (pipeline/transform.py) -> tf.Examples ->
TFRecords. The run's global counts are one combine (pipeline/keyed_results.py). Beam
elements are blocks and record batches, never single rows; a row is parsed on its own in
Python only when a vectorized check refused its block (see pipeline/batches.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.utils import shared

from common import artifacts
from common.config import Config
from pipeline import decode, example_encoding, keyed_results
from pipeline.decode_blocks import REJECTED, DecodeBlocks
from pipeline.record_batch_coder import RecordBatchCoder  # noqa: F401 (registers it)
from pipeline.sinks import WriteTFRecordLists
from pipeline.sources import ReadRaw
from pipeline.spill import Spill
from pipeline.transform import TransformBatches

MEASUREMENTS = "measurements.json"
WRITTEN = "written.json"
"""In the work directory: the number of examples the transforming pass wrote, per split."""
DEFAULT_BATCH_SIZE = 8192
_SPLIT_ROWS = [
    ("Train", decode.TRAIN, "train_rows"),
    ("Validation", decode.VALIDATION, "validation"),
    ("Eval", decode.EVAL, "eval"),
]
"""(step label, split, key in the measurements) of each split's row count."""


def _write_json(value: Any, path: str) -> None:
    with FileSystems.create(path) as f:
        f.write(json.dumps(value, sort_keys=True).encode("utf-8"))


def _written_splits(config: Config) -> list[tuple[str, str]]:
    """(step label, split) of each split written to OUTPUT/data; the validation split only
    when the config asks for one, so an output without it lists no validation shards."""
    splits = [("Train", decode.TRAIN), ("Eval", decode.EVAL)]
    if config.split.validation_fraction > 0:
        splits.insert(1, ("Validation", decode.VALIDATION))
    return splits


class EncodeExamples(beam.DoFn):
    """A transformed record batch -> the list of its rows as serialized tf.Examples.

    One list per batch, so the sink frames a batch at a time instead of Beam handling every
    example as an element. Each example's features are sorted by name, the bytes of
    `SerializeToString(deterministic=True)`: tfx_bsl's encoder writes them in an order that
    changes from one encoder to the next, so two runs over the same input would write
    different bytes. `pipeline.example_encoding` writes those bytes column-wise; a batch it
    does not take (a column that is not a list of int64 or float32) goes through tfx_bsl's
    encoder and is parsed and serialized again.
    """

    def setup(self):
        from tensorflow.core.example import example_pb2
        from tfx_bsl.public.tfxio import RecordBatchToExamplesEncoder

        self._encoder = RecordBatchToExamplesEncoder()
        self._parse = example_pb2.Example.FromString

    def process(self, record_batch):
        encoded = example_encoding.encode(record_batch)
        if encoded is not None:
            yield encoded
            return
        parse = self._parse
        yield [
            parse(example).SerializeToString(deterministic=True)
            for example in self._encoder.encode(record_batch)
        ]


def build(
    p: beam.Pipeline,
    config: Config,
    patterns: Sequence[str],
    header: list[str] | None,
    output: str,
    work_dir: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_shards: int = 0,
    first_file: str = "the first input file",
) -> None:
    """Adds the whole measuring and transforming graph to pipeline `p`.

    Args:
      p: the pipeline.
      config: the validated config.
      patterns: the `--input` file patterns; the workers match them, so the graph's size does
        not depend on how many files they match.
      header: the CSV header every file must have (None for other formats).
      output: where the artifacts go (a staging directory until committed).
      work_dir: where intermediate measurements go.
      batch_size: rows per record batch.
      num_shards: TFRecord files per split; 0 derives it from the split's rows
        (`pipeline.sinks.default_num_shards`).
      first_file: the file `header` was read from, named when another file's differs.
    """
    from pipeline import analyzers, features, measure
    from pipeline.transform_graph import write_transform_graph

    adapter_config = features.tensor_adapter_config(config)
    schema = adapter_config.arrow_schema

    # The input is read and decoded once. Each written split's decoded batches also go to
    # Arrow IPC files in the work directory (pipeline/spill.py), which the transforming pass
    # reads after the analysis: it neither reads nor decodes the input again, and memory
    # stays flat (the rows wait on disk, not in memory). Every count comes from this pass;
    # the examples the transforming pass writes are counted and checked against them before
    # the commit (pipeline/run.py).
    read = ReadRaw(patterns, config, header, batch_size, first_file)
    blocks = p | "ReadRaw" >> read
    rows = blocks | "Decode" >> beam.ParDo(DecodeBlocks(config, header, schema)).with_outputs(
        REJECTED, decode.VALIDATION, decode.EVAL, main=decode.TRAIN
    )
    for split in (decode.TRAIN, decode.VALIDATION, decode.EVAL):
        rows[split].element_type = pa.RecordBatch  # Beam's coder: RecordBatchCoder
    train, eval_ = rows[decode.TRAIN], rows[decode.EVAL]
    again = {
        split: rows[split]
        | f"Spill{name}" >> Spill(artifacts.join(work_dir, "spill", split), schema, batch_size)
        for name, split in _written_splits(config)
    }

    counted = train | "CountTokens" >> measure.CountFrequencies(config)
    measured_train = train | "MeasureTrain" >> beam.CombineGlobally(measure.MeasureBatches(config))
    # The analysis is the exact counts and sums above: the vocabulary files come from the
    # counts, and the transform graph is traced once from them and the sums
    # (pipeline/transform_graph.py), with no analysis pass over the training split.
    vocabularies, smallest_entries = analyzers.vocabularies(
        counted["per_token"], config, artifacts.join(work_dir, "vocabularies")
    )
    transform_fn = (
        p
        | "Graph" >> beam.Create([None])
        | "WriteTransformGraph"
        >> beam.Map(
            write_transform_graph,
            config,
            adapter_config,
            output,
            work_dir,
            beam.pvalue.AsDict(vocabularies),
            beam.pvalue.AsSingleton(measured_train),
        )
    )
    transform_fn_dir = beam.pvalue.AsSingleton(transform_fn)
    tables = shared.Shared()
    transformed = {
        name: again[split]
        | f"Transform{name}"
        >> beam.ParDo(
            TransformBatches(config, adapter_config, tables),
            transform_fn_dir,
            beam.pvalue.AsSingleton(measured_train),
        ).with_output_types(pa.RecordBatch)
        for name, split in _written_splits(config)
    }

    # The first pass's global results, in one combine (pipeline/keyed_results.py): the rows
    # read, the rejects and their reasons, each split's rows, the vocabularies' frequency
    # summaries and overlaps, the eval split's measurements and skew.
    rejected = rows[REJECTED]
    measured = (
        [
            blocks | "TagRead" >> beam.Map(lambda block: ("read", len(block[1]))),
            rejected | "TagRejected" >> beam.Map(lambda _: ("rejected", 1)),
            rejected
            | "TagReasons" >> beam.Map(lambda r: ("reasons", decode.reason_kind(r["reason"]))),
            measured_train | "TagTrain" >> beam.Map(lambda m: ("train", m)),
            counted["frequencies"] | "TagFrequencies" >> beam.Map(lambda f: ("frequencies", f)),
            counted[measure.UNSTORABLE]
            | "TagUnstorable" >> beam.Map(lambda u: (measure.UNSTORABLE, u)),
            counted["overlaps"] | "TagOverlaps" >> beam.Map(lambda o: ("overlaps", o)),
            eval_
            | "MeasureEval"
            >> beam.CombineGlobally(measure.MeasureBatches(config)).without_defaults()
            | "TagEvalMeasured" >> beam.Map(lambda m: ("eval_measured", m)),
            (counted["per_token"], eval_, smallest_entries)
            | "MeasureEvalSkew" >> measure.MeasureEvalSkew(config)
            | "TagEvalSkew" >> beam.Map(lambda s: ("eval_skew", s)),
            *(
                rows[split] | f"Tag{name}Rows" >> beam.Map(lambda b, k: (k, b.num_rows), key)
                for name, split, key in _SPLIT_ROWS
            ),
        ]
        | "FlattenMeasurements" >> beam.Flatten()
        | "Measurements"
        >> beam.CombineGlobally(
            keyed_results.ByKey(
                {
                    "read": keyed_results.Sum(),
                    "rejected": keyed_results.Sum(),
                    "reasons": keyed_results.Tally(),
                    "train": keyed_results.Only(),
                    "frequencies": keyed_results.Listed(),
                    measure.UNSTORABLE: keyed_results.Listed(),
                    "overlaps": keyed_results.Listed(),
                    "eval_measured": keyed_results.Only(),
                    "eval_skew": keyed_results.Listed(),
                    "train_rows": keyed_results.Sum(),
                    "validation": keyed_results.Sum(),
                    "eval": keyed_results.Sum(),
                }
            )
        )
    )
    _ = measured | "WriteMeasurements" >> beam.Map(
        _write_json, artifacts.join(work_dir, MEASUREMENTS)
    )
    # The first pass's rows of a split decide its default number of files (the transforming
    # pass waits on the analysis of the first pass anyway).
    first_pass_rows = {
        split: measured | f"{name}Rows" >> beam.Map(lambda m, k: m[k], key)
        for name, split, key in _SPLIT_ROWS
    }
    written = []
    for name, batches in transformed.items():
        split = name.lower()
        examples = batches | f"Encode{name}" >> beam.ParDo(EncodeExamples()).with_output_types(
            list[bytes]
        )
        _ = examples | f"Write{name}" >> WriteTFRecordLists(
            artifacts.join(output, artifacts.DATA_DIR, split),
            file_name_suffix=artifacts.TFRECORD_SUFFIX,
            work_dir=artifacts.join(work_dir, "runs", split),
            num_shards=num_shards,
            rows=first_pass_rows[split],
            checksum_dir=artifacts.join(work_dir, artifacts.CHECKSUMS_DIR),
        )
        written.append(
            examples | f"Count{name}Written" >> beam.Map(lambda e, k: (k, len(e)), split)
        )
    _ = (
        written
        | "FlattenWritten" >> beam.Flatten()
        | "SumWritten"
        >> beam.CombineGlobally(
            keyed_results.ByKey(
                {split: keyed_results.Sum() for _, split in _written_splits(config)}
            )
        )
        | "WriteWritten" >> beam.Map(_write_json, artifacts.join(work_dir, WRITTEN))
    )

    _ = (
        rejected
        | "FormatRejected" >> beam.Map(json.dumps, sort_keys=True)
        | "WriteRejected"
        >> beam.io.WriteToText(
            artifacts.join(output, artifacts.REJECTED_DIR, "rejected"),
            file_name_suffix=".jsonl",
        )
    )
