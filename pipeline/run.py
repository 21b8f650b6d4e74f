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
_SUCCESS. A local run writes into OUTPUT.incomplete-XXXX and renames it when done.

The Beam graph is in pipeline/graph.py, the checks before it in pipeline/input_checks.py,
the Dataflow dry run (`--dry_run True`: build and measure the job, submit nothing) in
pipeline/dry_run.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
import uuid
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
from pipeline import report
from pipeline.graph import DEFAULT_BATCH_SIZE, MEASUREMENTS, build
from pipeline.input_checks import InputError, inspect_inputs, match_inputs

LOG = logging.getLogger("pipeline")

DEFAULT_MAX_REJECTED_FRACTION = 0.01


class TooManyRejected(RuntimeError):
    """More rows were rejected than --max-rejected-fraction allows."""


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
            moments = train["numeric"].get(feature.name, [0, 0.0, 0.0, 0.0, 0.0])
            stats["numeric"][feature.name] = statistics.numeric_summary(*moments)
    return stats


def _check_output(output: str, overwrite: bool) -> None:
    if FileSystems.exists(output) and not overwrite:
        raise InputError(f"--output {output} already exists; pass --overwrite to replace it")


def _staging_dir(output: str) -> str:
    """Where a run writes before it commits: a sibling of OUTPUT on a local disk (committed
    by one rename); OUTPUT itself on object stores, where `_SUCCESS`, written last, commits."""
    if "://" in output:
        return output
    return f"{output}.incomplete-{uuid.uuid4().hex[:8]}"


def _commit(staging: str, output: str, overwrite: bool) -> None:
    if staging == output:
        return
    if os.path.exists(output):
        if not overwrite:
            raise InputError(f"--output {output} appeared while the pipeline ran; not replaced")
        LOG.info("Replacing the existing %s (--overwrite)", output)
        shutil.rmtree(output)
    os.rename(staging, output)


def check_rejected(stats: dict[str, Any], max_fraction: float, rejected_dir: str) -> None:
    """Raises TooManyRejected, naming the commonest reasons, past the allowed fraction."""
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
    parser.add_argument(
        "--num-shards",
        type=int,
        default=0,
        help="TFRecord files per split in OUTPUT/data (default 0: the runner decides); a "
        "TPU Pod needs at least one train file per host",
    )
    return parser.parse_known_args(argv)


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the pipeline; returns the stats written to OUTPUT/stats.json.

    The run writes into a staging directory and commits it as OUTPUT only when everything
    is written, `_SUCCESS` last; a failed or killed run leaves no `_SUCCESS` at OUTPUT.

    Raises:
      ConfigError: the config is invalid.
      InputError: no input, an empty input, data that does not match the config, or an
        existing OUTPUT without --overwrite.
      TooManyRejected: more rows rejected than --max-rejected-fraction allows; the output
        (rejected/ included) is left without `_SUCCESS`.
    """
    args, beam_args = parse_args(argv)
    if args.num_shards < 0:
        raise InputError(f"--num-shards {args.num_shards}: give 0 (the runner decides) or more")
    config = load_config(args.config)
    files = match_inputs(args.input)
    header = inspect_inputs(files, config)
    output = args.output.rstrip("/")
    dry_run = "--dry_run" in " ".join(beam_args)
    if not dry_run:
        _check_output(output, args.overwrite)
    staging = output if dry_run else _staging_dir(output)
    if not dry_run and staging == output and FileSystems.exists(output):
        FileSystems.delete([output])
    work_dir = artifacts.join(staging, ".work")
    LOG.info(
        "Reading %d %s file(s) into %s (committed as %s when done)",
        len(files),
        config.input.format,
        staging,
        output,
    )

    import tensorflow_transform as tft
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

    from pipeline import features

    options = PipelineOptions(beam_args, save_main_session=False)
    build_args = {
        "batch_size": args.batch_size,
        "num_shards": args.num_shards,
        "first_file": files[0].path,
    }
    if options.view_as(TestOptions).dry_run:
        if "Dataflow" not in str(options.view_as(StandardOptions).runner):
            raise InputError("--dry_run is a DataflowRunner option; add --runner DataflowRunner")
        from pipeline.dry_run import dry_run

        return dry_run(options, config, args.input, header, staging, work_dir, **build_args)

    started = time.time()
    try:
        with beam.Pipeline(options=options) as p:
            build(p, config, args.input, header, staging, work_dir, **build_args)
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
        FileSystems.delete([work_dir])
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
        try:
            check_rejected(
                stats, args.max_rejected_fraction, artifacts.join(output, artifacts.REJECTED_DIR)
            )
        except TooManyRejected:
            _commit(staging, output, args.overwrite)
            raise
        artifacts.write_text(staging, artifacts.SUCCESS, "")
        _commit(staging, output, args.overwrite)
    except BaseException:
        if staging != output and os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)
        raise
    LOG.info("Wrote %s", output)
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        stats = run(argv)
    except (ConfigError, InputError, TooManyRejected) as e:
        LOG.error("%s", e)
        return 2
    if stats.get("dry_run"):
        print(stats["summary"])
        return 0
    print(json.dumps({"rows": stats["rows"]}, indent=2))
    return 0
