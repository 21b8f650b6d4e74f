"""The measuring pipeline: raw rows -> vocabularies, exact statistics, transformed TFRecords.

Raw rows come as CSV, JSON Lines, TFRecords of tf.Example or Parquet (`[input] format`).

Locally, on the DirectRunner:

    python -m pipeline --config examples/clicks/features.toml \
        --input 'examples/clicks/data/clicks.csv' --output runs/clicks

On Dataflow, the same command with Beam's options (they pass through untouched):

    python -m pipeline --config features.toml --input 'gs://BUCKET/raw/*.csv.gz' \
        --output gs://BUCKET/clicks --runner DataflowRunner --project P --region R \
        --temp_location gs://BUCKET/tmp --setup_file ./setup.py

OUTPUT receives the tf.Transform artifacts (transform_fn/, transformed_metadata/), the
transformed tf.Examples (data/train-*.tfrecord.gz, data/eval-*.tfrecord.gz), every unusable
row with its reason (rejected/), stats.json, report.html, the resolved config.json and, last,
_SUCCESS, the manifest of the run's files. The run writes into OUTPUT.incomplete-<run id>
beside OUTPUT and is committed when everything is written (pipeline/commit.py).

The graph: read blocks of raw records -> decode them into Arrow record batches (train, eval,
rejected) -> measure (exact length histograms, token frequencies, moments) and analyze
(tf.Transform vocabularies, z-score moments); then a second read and decode of the same input
-> transform with the analysis' transform_fn -> tf.Examples -> TFRecords. Beam elements are
blocks and record batches, never single rows; a row is parsed on its own in Python only when
a vectorized check refused its block (see pipeline/batches.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    StandardOptions,
    TestOptions,
)

from common import artifacts, statistics
from common.config import Config, ConfigError, load_config
from pipeline import commit, decode, report
from pipeline.sinks import WriteTFRecordLists
from pipeline.sources import (
    REJECTED,
    DecodeBlocks,
    InputError,
    ReadRaw,
    inspect_inputs,
    match_inputs,
)

LOG = logging.getLogger("pipeline")

MEASUREMENTS = "measurements.json"
DEFAULT_BATCH_SIZE = 8192
DEFAULT_MAX_REJECTED_FRACTION = 0.01


class TooManyRejected(RuntimeError):
    """More rows were rejected than --max-rejected-fraction allows."""


def _write_json(value: Any, path: str) -> None:
    with FileSystems.create(path) as f:
        f.write(json.dumps(value, sort_keys=True).encode("utf-8"))


def _single(label: str, key: str):
    return label >> beam.Map(lambda value: (key, value))


def build(
    p: beam.Pipeline,
    config: Config,
    files: Sequence[str],
    header: list[str] | None,
    output: str,
    work_dir: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    transform_temp_dir: str | None = None,
) -> None:
    """Adds the whole measuring and transforming graph to pipeline `p`.

    Args:
      p: the pipeline.
      config: the validated config.
      files: the input files, already matched.
      header: the CSV header (None for other formats).
      output: where the artifacts go (a staging directory until committed).
      work_dir: where intermediate measurements go.
      batch_size: rows per record batch.
      transform_temp_dir: tf.Transform's temporary directory, written while the graph is
        built; defaults to work_dir/tft. A Dataflow dry run passes a local one, so building
        the job needs no access to Cloud Storage.
    """
    import tensorflow_transform.beam as tft_beam
    from tfx_bsl.coders import example_coder

    from pipeline import features, measure
    from pipeline.preprocessing import PreprocessingFn

    adapter_config = features.tensor_adapter_config(config)
    schema = adapter_config.arrow_schema

    def read_and_decode(suffix: str, counted: bool):
        blocks = p | f"ReadRaw{suffix}" >> ReadRaw(files, config, batch_size)
        rows = blocks | f"Decode{suffix}" >> beam.ParDo(
            DecodeBlocks(config, header, schema, counted)
        ).with_outputs(REJECTED, decode.EVAL, main=decode.TRAIN)
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
            for name, split in (("Train", decode.TRAIN), ("Eval", decode.EVAL))
        }
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(output)

    for name, (batches, _) in transformed.items():
        _ = (
            batches
            | f"Encode{name}"
            >> beam.Map(lambda batch: example_coder.RecordBatchToExamples(batch[0]))
            | f"Write{name}"
            >> WriteTFRecordLists(
                artifacts.join(output, artifacts.DATA_DIR, name.lower()),
                file_name_suffix=artifacts.TFRECORD_SUFFIX,
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
    ]
    _ = (
        measurements
        | "FlattenMeasurements" >> beam.Flatten()
        | "CollectMeasurements" >> beam.combiners.ToDict()
        | "WriteMeasurements" >> beam.Map(_write_json, artifacts.join(work_dir, MEASUREMENTS))
    )


def summarize(config: Config, measured: dict[str, Any], vocabulary_sizes: dict[str, int]) -> dict:
    """stats.json from the pipeline's measurements and the written vocabulary sizes."""
    train = measured["train"]
    frequencies = dict(measured["frequencies"])
    stats: dict[str, Any] = {
        "rows": {
            "read": measured["read"],
            "train": train["rows"],
            "eval": measured["eval"],
            "rejected": measured["rejected"],
        },
        "rejected_reasons": dict(sorted(measured["reasons"], key=lambda r: (-r[1], r[0]))),
        "vocabularies": {},
        "sequences": {},
        "numeric": {},
        "label": {"name": config.label.name, "type": config.label.type},
    }
    for vocabulary, names in config.vocabularies().items():
        settings = config.vocabulary_config(vocabulary)
        summary = statistics.vocabulary_summary(
            frequencies.get(vocabulary, []), settings.top_k, settings.frequency_threshold
        )
        size = vocabulary_sizes[vocabulary]
        if size != summary["expected_size"]:
            LOG.warning(
                "vocabulary %s: tf.Transform wrote %d entries, the frequency counts expect %d",
                vocabulary,
                size,
                summary["expected_size"],
            )
        stats["vocabularies"][vocabulary] = {
            "features": names,
            "size": size,
            "num_oov_buckets": settings.num_oov_buckets,
            "distinct_values": summary["distinct_values"],
            "tokens": summary["tokens"],
            "oov_rate": summary["oov_rate"],
            "coverage": summary["coverage"],
            "top_k": settings.top_k,
            "frequency_threshold": settings.frequency_threshold,
        }
    stats["vocabulary_overlaps"] = [
        {"vocabularies": list(pair), "shared_values": count}
        for pair, count in sorted(measured["overlaps"], key=lambda o: tuple(o[0]))
    ]
    for feature in config.features:
        if feature.type == "sequence":
            histogram = train["lengths"].get(feature.name, {})
            stats["sequences"][feature.name] = statistics.sequence_summary(histogram)
        elif feature.type == "numeric":
            moments = train["numeric"].get(feature.name, [0, 0, 0, 0.0, 0.0])
            stats["numeric"][feature.name] = statistics.numeric_summary(*moments)
    return stats


def check_rejected(
    stats: dict[str, Any], max_fraction: float, rejected_dir: str, output: str = ""
) -> None:
    """Raises TooManyRejected, naming the commonest reasons, past the allowed fraction.

    Args:
      stats: the run's statistics.
      max_fraction: --max-rejected-fraction.
      rejected_dir: where the rejected rows are (the run's staging prefix: they are kept).
      output: OUTPUT, named as left as it was (nothing is committed).
    """
    rows = stats["rows"]
    if not rows["read"] or rows["rejected"] / rows["read"] <= max_fraction:
        return
    reasons = list(stats["rejected_reasons"].items())[:3]
    raise TooManyRejected(
        f"{rows['rejected']} of {rows['read']} rows rejected "
        f"({rows['rejected'] / rows['read']:.2%}), more than --max-rejected-fraction "
        f"{max_fraction:g}; commonest reasons: "
        + "; ".join(f"{reason} ({count})" for reason, count in reasons)
        + f". Every rejected row, with its reason, is in {rejected_dir}"
        + (f" (nothing was committed: {output} is as it was)" if output else "")
    )


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description=(
            "Measure raw data and transform it for training: shared vocabularies, exact "
            "sequence-length statistics, transformed TFRecords. Any other flag is a Beam "
            "pipeline option (--runner DataflowRunner --project P --region R ...)."
        ),
    )
    parser.add_argument("--config", required=True, help="the feature config (TOML)")
    parser.add_argument(
        "--input",
        required=True,
        action="append",
        help="a file pattern of raw files in the config's format (local or gs://, .gz "
        "allowed); repeat for more",
    )
    parser.add_argument("--output", required=True, help="the output directory (local or gs://)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing output directory"
    )
    parser.add_argument(
        "--max-rejected-fraction",
        type=float,
        default=DEFAULT_MAX_REJECTED_FRACTION,
        help="fail the run if more than this share of rows is rejected (default %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="rows per record batch fed to tf.Transform (default %(default)s)",
    )
    return parser.parse_known_args(argv)


def _dry_run(options, config, files, header, output, work_dir, batch_size) -> dict[str, Any]:
    """Builds the job (on Dataflow: the job description) without running it."""
    import tempfile

    p = beam.Pipeline(options=options)
    with tempfile.TemporaryDirectory() as transform_temp_dir:
        build(p, config, files, header, output, work_dir, batch_size, transform_temp_dir)
        result = p.run()
    LOG.info("Dry run: the job was built and not run; nothing was written to %s", output)
    return {"dry_run": True, "job": getattr(result, "job", None)}


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the pipeline; returns the stats written to OUTPUT/stats.json.

    The run writes into a staging prefix beside OUTPUT and commits it as OUTPUT only when
    everything is written, `_SUCCESS` (the manifest of the run's files) last; see
    `pipeline/commit.py` for the protocol and its one window. A run that fails before the
    commit leaves the previous OUTPUT as it was.

    Raises:
      ConfigError: the config is invalid.
      InputError: no input, an empty input, data that does not match the config, or an
        existing OUTPUT without --overwrite.
      TooManyRejected: more rows rejected than --max-rejected-fraction allows; nothing is
        committed, and the staging prefix keeps rejected/, stats.json and report.html (the
        error says where).
      CommitError: the commit failed after the previous OUTPUT was invalidated.
    """
    args, beam_args = parse_args(argv)
    config = load_config(args.config)
    files = match_inputs(args.input)
    header = inspect_inputs(files, config)
    output = args.output.rstrip("/")
    options = PipelineOptions(beam_args, save_main_session=False)
    dry_run = bool(options.view_as(TestOptions).dry_run)
    this_run = None if dry_run else commit.begin(output, args.overwrite)

    import tensorflow_transform as tft
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

    from pipeline import features

    if dry_run:
        if "Dataflow" not in str(options.view_as(StandardOptions).runner):
            raise InputError("--dry_run is a DataflowRunner option; add --runner DataflowRunner")
        work_dir = artifacts.join(output, artifacts.WORK_DIR)
        return _dry_run(options, config, files, header, output, work_dir, args.batch_size)

    staging, work_dir = this_run.staging, this_run.work_dir
    LOG.info(
        "Run %s: reading %d %s file(s) into %s (committed as %s when done)",
        this_run.run_id,
        len(files),
        config.input.format,
        staging,
        output,
    )
    started = time.time()
    try:
        with beam.Pipeline(options=options) as p:
            build(p, config, files, header, staging, work_dir, args.batch_size)
        LOG.info("Beam pipeline finished in %.1f s; summarizing", time.time() - started)

        measured = json.loads(artifacts.read_text(work_dir, MEASUREMENTS))
        transform_output = tft.TFTransformOutput(staging)
        sizes = {
            name: int(transform_output.vocabulary_size_by_name(name))
            for name in config.vocabularies()
        }
        metadata_io.write_metadata(
            dataset_metadata.DatasetMetadata(features.raw_schema(config)),
            artifacts.join(staging, tft.TFTransformOutput.RAW_METADATA_DIR),
        )
        stats = summarize(config, measured, sizes)
        artifacts.write_json(staging, artifacts.STATS, stats)
        artifacts.write_json(staging, artifacts.CONFIG, config.to_dict())
        artifacts.write_text(
            staging, artifacts.REPORT, report.render(stats, config, f"Pipeline report: {output}")
        )
        rows = stats["rows"]
        LOG.info(
            "Rows: %d read, %d train, %d eval, %d rejected",
            rows["read"],
            rows["train"],
            rows["eval"],
            rows["rejected"],
        )
        if rows["read"] != rows["train"] + rows["eval"] + rows["rejected"]:
            raise RuntimeError(f"rows do not add up: {rows}")
        check_rejected(
            stats,
            args.max_rejected_fraction,
            artifacts.join(staging, artifacts.REJECTED_DIR),
            output,
        )
        commit.commit(this_run, args.overwrite)
    except TooManyRejected:
        commit.keep_for_inspection(this_run)
        raise
    except BaseException:
        commit.abandon(this_run)
        raise
    LOG.info("Wrote %s", output)
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        stats = run(argv)
    except (ConfigError, InputError, TooManyRejected, commit.CommitError) as e:
        LOG.error("%s", e)
        return 2
    if stats.get("dry_run"):
        print("Dry run: the pipeline was built, not run.")
        return 0
    print(json.dumps({"rows": stats["rows"]}, indent=2))
    return 0
