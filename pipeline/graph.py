"""The measuring and transforming Beam graph, the same on the DirectRunner and on Dataflow.

Read blocks of raw records -> decode them into Arrow record batches (train, validation, eval,
rejected) -> measure (exact length histograms, token frequencies, moments, the eval split's
skew from train) and analyze (tf.Transform vocabularies, z-score moments); then a second
read and decode of the same input -> transform with the analysis' transform_fn ->
tf.Examples -> TFRecords. Beam elements are blocks and record batches, never single rows; a
row is parsed on its own in Python only when a vectorized check refused its block (see
pipeline/batches.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from common import artifacts
from common.config import Config
from pipeline import decode
from pipeline.decode_blocks import REJECTED, DecodeBlocks
from pipeline.sinks import WriteTFRecordLists
from pipeline.sources import ReadRaw

MEASUREMENTS = "measurements.json"
DEFAULT_BATCH_SIZE = 8192


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


def _single(label: str, key: str):
    return label >> beam.Map(lambda value: (key, value))


class EncodeExamples(beam.DoFn):
    """A transformed record batch -> the list of its rows as serialized tf.Examples.

    One list per batch, so the sink frames a batch at a time instead of Beam handling every
    example as an element.
    """

    def setup(self):
        from tfx_bsl.public.tfxio import RecordBatchToExamplesEncoder

        self._encoder = RecordBatchToExamplesEncoder()

    def process(self, batch):
        record_batch, _ = batch  # (record batch, tf.Transform's pass-through features)
        yield self._encoder.encode(record_batch)


def build(
    p: beam.Pipeline,
    config: Config,
    patterns: Sequence[str],
    header: list[str] | None,
    output: str,
    work_dir: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    transform_temp_dir: str | None = None,
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
      transform_temp_dir: tf.Transform's temporary directory, written while the graph is
        built; defaults to work_dir/tft. A Dataflow dry run passes a local one, so building
        the job needs no access to Cloud Storage.
      num_shards: TFRecord files per split; 0 lets the runner decide.
      first_file: the file `header` was read from, named when another file's differs.
    """
    import tensorflow_transform.beam as tft_beam

    from pipeline import features, measure
    from pipeline.preprocessing import PreprocessingFn

    adapter_config = features.tensor_adapter_config(config)
    schema = adapter_config.arrow_schema

    def read_and_decode(suffix: str, counted: bool):
        blocks = p | f"ReadRaw{suffix}" >> ReadRaw(patterns, config, header, batch_size, first_file)
        rows = blocks | f"Decode{suffix}" >> beam.ParDo(
            DecodeBlocks(config, header, schema, counted)
        ).with_outputs(REJECTED, decode.VALIDATION, decode.EVAL, main=decode.TRAIN)
        return blocks, rows

    # The input is read twice: once to measure and analyze, once, after the analysis, to
    # transform and write. Keeping the decoded rows between the two passes instead would
    # hold the whole dataset (in memory on the DirectRunner); reading and decoding again
    # costs a few seconds a million rows, and memory stays flat however many rows there are.
    # Every count comes from the first pass; decoding is deterministic, so the second pass
    # sees the same rows.
    blocks, rows = read_and_decode("", counted=True)
    train, eval_ = rows[decode.TRAIN], rows[decode.EVAL]
    _, again = read_and_decode("Again", counted=False)

    with tft_beam.Context(temp_dir=transform_temp_dir or artifacts.join(work_dir, "tft")):
        transform_fn = (train, adapter_config) | "Analyze" >> tft_beam.AnalyzeDataset(
            PreprocessingFn(config)
        )
        transformed = {
            name: ((again[split], adapter_config), transform_fn)
            | f"Transform{name}" >> tft_beam.TransformDataset(output_record_batches=True)
            for name, split in _written_splits(config)
        }
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(output)

    for name, (batches, _) in transformed.items():
        _ = (
            batches
            | f"Encode{name}" >> beam.ParDo(EncodeExamples())
            | f"Write{name}"
            >> WriteTFRecordLists(
                artifacts.join(output, artifacts.DATA_DIR, name.lower()),
                file_name_suffix=artifacts.TFRECORD_SUFFIX,
                num_shards=num_shards,
            )
        )

    rejected = rows[REJECTED]
    _ = (
        rejected
        | "FormatRejected" >> beam.Map(json.dumps, sort_keys=True)
        | "WriteRejected"
        >> beam.io.WriteToText(
            artifacts.join(output, artifacts.REJECTED_DIR, "rejected"),
            file_name_suffix=".jsonl",
        )
    )

    counted = train | "CountTokens" >> measure.CountFrequencies(config)
    measurements = [
        blocks
        | "BlockRows" >> beam.Map(lambda block: len(block[1]))
        | "CountRead" >> beam.CombineGlobally(sum)
        | _single("KeyRead", "read"),
        rejected
        | "CountRejected" >> beam.combiners.Count.Globally()
        | _single("KeyRejected", "rejected"),
        rejected
        | "Reasons" >> beam.Map(lambda r: decode.reason_kind(r["reason"]))
        | "CountReasons" >> beam.combiners.Count.PerElement()
        | "ListReasons" >> beam.combiners.ToList()
        | _single("KeyReasons", "reasons"),
        train
        | "MeasureTrain" >> beam.CombineGlobally(measure.MeasureBatches(config))
        | _single("KeyTrain", "train"),
        eval_
        | "EvalRows" >> beam.Map(lambda batch: batch.num_rows)
        | "CountEval" >> beam.CombineGlobally(sum)
        | _single("KeyEval", "eval"),
        counted["frequencies"]
        | "ListFrequencies" >> beam.combiners.ToList()
        | _single("KeyFrequencies", "frequencies"),
        counted["overlaps"]
        | "ListOverlaps" >> beam.combiners.ToList()
        | _single("KeyOverlaps", "overlaps"),
        rows[decode.VALIDATION]
        | "ValidationRows" >> beam.Map(lambda batch: batch.num_rows)
        | "CountValidation" >> beam.CombineGlobally(sum)
        | _single("KeyValidation", "validation"),
        eval_
        | "MeasureEval" >> beam.CombineGlobally(measure.MeasureBatches(config))
        | _single("KeyEvalMeasured", "eval_measured"),
        (counted["per_token"], eval_)
        | "MeasureEvalSkew" >> measure.MeasureEvalSkew(config)
        | "ListEvalSkew" >> beam.combiners.ToList()
        | _single("KeyEvalSkew", "eval_skew"),
    ]
    _ = (
        measurements
        | "FlattenMeasurements" >> beam.Flatten()
        | "CollectMeasurements" >> beam.combiners.ToDict()
        | "WriteMeasurements" >> beam.Map(_write_json, artifacts.join(work_dir, MEASUREMENTS))
    )
