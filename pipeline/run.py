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
transformed tf.Examples (data/train-*.tfrecord.gz, data/eval-*.tfrecord.gz and, with a
`[split] validation_fraction`, data/validation-*.tfrecord.gz), every unusable
row with its reason (rejected/), stats.json, report.html, the resolved config.json and, last,
_SUCCESS, the manifest of the run's files. The run writes into OUTPUT.incomplete-<run id>
beside OUTPUT and is committed when everything is written (pipeline/commit.py).

The Beam graph is in pipeline/graph.py, the checks before it in pipeline/input_checks.py,
the Dataflow dry run (`--dry_run True`: build and measure the job, submit nothing) in
pipeline/dry_run.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import posixpath
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apache_beam.options.pipeline_options import (
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    TestOptions,
    WorkerOptions,
)

from common import artifacts, console, environments, process, statistics, storage
from common.config import LIST_TYPES, Config, ConfigError, load_config
from pipeline import commit, feature_statistics, report
from pipeline.graph import DEFAULT_BATCH_SIZE, MEASUREMENTS, WRITTEN, build
from pipeline.input_checks import (
    folder_patterns,
    inspect_inputs,
    match_inputs,
    out_of_space,
    quiet_beam_input_errors,
)
from pipeline.input_files import InputError
from pipeline.local_runner import default_runner
from pipeline.measure import NO_MOMENTS, UNSTORABLE
from pipeline.options import Options, new_pipeline
from pipeline.signatures import cache_signatures

LOG = logging.getLogger("pipeline")

DEFAULT_MAX_REJECTED_FRACTION = 0.01
REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements" / "pipeline.txt"
"""What Dataflow's workers install: the pipeline environment's lock, exported with hashes
(`uv export --frozen --format requirements-txt --extra pipeline --no-emit-project`)."""
MAX_NUM_SHARDS = 100_000
"""The most --num-shards allows: every shard is a file (and an entry of each worker's state
while it is written), so more is a typo, not a plan."""


class TooManyRejected(RuntimeError):
    """More rows were rejected than --max-rejected-fraction allows."""


def summarize(config: Config, measured: dict[str, Any], vocabulary_sizes: dict[str, int]) -> dict:
    """stats.json from the pipeline's measurements and the written vocabulary sizes."""
    train = measured["train"]
    frequencies = dict(measured["frequencies"])
    unstorable = dict(measured.get(UNSTORABLE, []))
    stats: dict[str, Any] = {
        "rows": {
            "read": measured["read"],
            "train": train["rows"],
            "validation": measured.get("validation", 0),
            "eval": measured["eval"],
            "rejected": measured["rejected"],
        },
        "rejected_reasons": dict(sorted(measured["reasons"], key=lambda r: (-r[1], r[0]))),
        "vocabularies": {},
        "sequences": {},
        "bags": {},
        "numeric": {},
        "label": {
            "name": config.label.name,
            "type": config.label.type,
            **statistics.numeric_summary(*train["numeric"].get(config.label.name, NO_MOMENTS)),
        },
    }
    skew = {tuple(key): sums for key, sums in measured.get("eval_skew", [])}
    for vocabulary, names in config.vocabularies().items():
        settings = config.vocabulary_config(vocabulary)
        summary = statistics.vocabulary_summary(
            frequencies.get(vocabulary, []),
            settings.top_k,
            settings.frequency_threshold,
            unstorable.get(vocabulary, (0, 0)),
        )
        size = vocabulary_sizes[vocabulary]
        if size != max(summary["expected_size"], 1):
            LOG.warning(
                "vocabulary %s: tf.Transform wrote %d entries, the frequency counts expect %d",
                vocabulary,
                size,
                summary["expected_size"],
            )
        elif not summary["expected_size"]:
            # The file of an empty vocabulary holds tf.Transform's one placeholder entry,
            # which no value maps to: the vocabulary keeps no value.
            size = 0
        unseen = [skew.get((vocabulary, name), [0, 0, 0]) for name in names]
        totals = (sum(column) for column in zip(*unseen, strict=True))
        eval_summary = statistics.unseen_summary(*totals)
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
            "eval_tokens": eval_summary["tokens"],
            "eval_unseen_rate": eval_summary["unseen_rate"],
            "eval_oov_rate": eval_summary["oov_rate"],
        }
    stats["vocabulary_overlaps"] = [
        {
            "vocabularies": list(pair),
            **statistics.overlap_summary(
                sums,
                stats["vocabularies"][pair[0]]["tokens"],
                stats["vocabularies"][pair[1]]["tokens"],
            ),
        }
        for pair, sums in sorted(measured["overlaps"], key=lambda o: tuple(o[0]))
    ]
    evaluated = measured.get("eval_measured", {"lengths": {}})
    stats["eval_skew"] = {
        "features": {},
        "lengths": {},
        # The eval split's numeric figures, the label's among them (statistics/eval.pb).
        "numeric": {
            name: statistics.numeric_summary(*evaluated.get("numeric", {}).get(name, NO_MOMENTS))
            for name in [f.name for f in config.features if f.type == "numeric"]
            + [config.label.name]
        },
    }
    for feature in config.features:
        if feature.type in LIST_TYPES:
            histogram = train["lengths"].get(feature.name, {})
            kind = "sequences" if feature.type == "sequence" else "bags"
            stats[kind][feature.name] = statistics.sequence_summary(histogram)
            stats["eval_skew"]["lengths"][feature.name] = statistics.sequence_summary(
                evaluated["lengths"].get(feature.name, {})
            )
        elif feature.type == "numeric":
            moments = train["numeric"].get(feature.name, NO_MOMENTS)
            stats["numeric"][feature.name] = statistics.numeric_summary(*moments)
        if feature.type != "numeric":
            vocabulary = config.vocabulary_of(feature)
            stats["eval_skew"]["features"][feature.name] = {
                "vocabulary": vocabulary,
                **statistics.unseen_summary(*skew.get((vocabulary, feature.name), [0, 0, 0])),
            }
    return stats


def check_on_cloud_storage(patterns: Sequence[str], output: str, dry_run: bool) -> None:
    """Refuses a Dataflow job whose --input or --output is on this machine's disk, which
    Dataflow's workers cannot read or write; a dry run (which runs nothing, and is how the
    tests build a job offline) only warns."""
    for flag, path in [*(("--input", p) for p in patterns), ("--output", output)]:
        if storage.is_remote(path):
            continue
        line = (
            f"{flag} {path} is on this machine's disk: Dataflow's workers cannot read or "
            "write it; give a gs:// path"
        )
        if not dry_run:
            raise InputError(line)
        LOG.warning("%s (the dry run goes on; a submitted job would fail)", line)


FLOAT32_EXACT = 2**24
"""Above this magnitude float32 (a tf.Example's float_list) no longer holds every integer."""


def warn_of_float32(stats: dict[str, Any]) -> None:
    """Warns of a numeric column whose values are too large for float32 to tell apart: a
    tf.Example holds numbers as float32, so values above 2**24 (timestamps in seconds, ids)
    are rounded to a step of 2 or more, and the column's figures and z-scores with them."""
    for name, figures in stats["numeric"].items():
        if not figures["count"]:
            continue
        largest = max(abs(figures["min"]), abs(figures["max"]))
        if largest > FLOAT32_EXACT:
            step = 2.0 ** (math.floor(math.log2(largest)) - 23)
            LOG.warning(
                "numeric feature %s: values up to %s are held as float32, as a tf.Example "
                "holds numbers; at that size float32 keeps steps of %s, so nearby values "
                "become one. Shift or scale the column (e.g. seconds since a recent date) in "
                "the input",
                name,
                f"{largest:.7g}",
                f"{step:g}",
            )


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
    kept = (f" (nothing was committed: {output} is as it was)" if output else "") + "."
    reasons = list(stats.get("rejected_reasons", {}).items())[:3]
    commonest = "; ".join(f"{reason} ({count:,})" for reason, count in reasons)
    if rows["read"] and not rows["train"]:
        held_out = rows["validation"] + rows["eval"]
        raise TooManyRejected(
            f"no training row: of {rows['read']:,} rows read, "
            + (
                f"{rows['rejected']:,} were rejected (commonest reasons: {commonest}; every "
                f"rejected row, with its reason, is in {rejected_dir})"
                if rows["rejected"]
                else f"none was rejected (its stats.json and report.html are in "
                f"{posixpath.dirname(rejected_dir)})"
            )
            + (
                f"{' and' if rows['rejected'] else ';'} {held_out:,} went to the held-out "
                f"splits ({rows['validation']:,} validation, {rows['eval']:,} eval): the split "
                "key sends all the rows of a key to one split, so a few keys can leave "
                "training empty"
                if held_out
                else ""
            )
            + "; nothing to train on"
            + kept
        )
    if not rows["read"] or rows["rejected"] / rows["read"] <= max_fraction:
        return
    raise TooManyRejected(
        f"{rows['rejected']:,} of {rows['read']:,} rows rejected "
        f"({rows['rejected'] / rows['read']:.2%}), more than --max-rejected-fraction "
        f"{max_fraction:g}; commonest reasons: {commonest}. Every rejected row, with its "
        f"reason, is in {rejected_dir}" + kept
    )


def check_written(rows: dict[str, int], written: dict[str, int]) -> None:
    """Refuses a run whose transforming pass wrote other numbers of examples than the
    measuring pass counted rows, split by split.

    The transforming pass reads the rows the measuring pass decoded and kept in the work
    directory (pipeline/spill.py); a kept file lost or damaged would otherwise lose rows
    silently.

    Args:
      rows: stats.json's `rows` (the measuring pass's counts, keyed by split name).
      written: the examples written per split (`graph.WRITTEN`).

    Raises:
      InputError: a split's counts differ; the message names each difference.
    """
    differ = [
        f"{split}: {written.get(split, 0):,} examples written, {rows.get(split, 0):,} rows measured"
        for split in sorted(set(written) | {s for s in artifacts.SPLITS if s in rows})
        if written.get(split, 0) != rows.get(split, 0)
    ]
    if differ:
        raise InputError(
            "the transforming pass wrote other numbers of examples than the measuring pass "
            f"counted ({'; '.join(differ)}); nothing was committed. The decoded rows kept "
            "between the passes under the output's staging directory were changed or lost "
            "while the pipeline ran: rerun"
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
        help="TFRecord files per split in OUTPUT/data (default 0: one per about 250,000 rows "
        "of the split, and at least min(16, rows / 2,000); see pipeline/sinks.py); a TPU Pod "
        "needs at least one train file per host. The files' bytes depend on the data and "
        "this number only",
    )
    console.add_flags(parser, environments.PIPELINE)
    return parser.parse_known_args(argv)


def with_worker_requirements(beam_args: list[str]) -> list[str]:
    """Beam's options, with `--requirements_file REQUIREMENTS` added when the runner is
    Dataflow and neither a requirements file nor an SDK container image is given: the workers
    then install exactly the packages of the pipeline environment's lock (from PyPI, at
    start-up)."""
    options = PipelineOptions(beam_args)
    if "Dataflow" not in str(options.view_as(StandardOptions).runner):
        return beam_args
    if options.view_as(SetupOptions).requirements_file:
        return beam_args
    if options.view_as(WorkerOptions).sdk_container_image:
        return beam_args
    if not REQUIREMENTS.is_file():
        LOG.warning("%s is missing: Dataflow's workers install Beam's defaults", REQUIREMENTS)
        return beam_args
    # The file pins every package with its hashes, in pip's multi-line form, which the
    # workers' `pip install -r` checks but Beam's launcher-side cache (`pip download` line by
    # line) cannot parse: the workers install from PyPI. Workers without internet access need
    # the container image instead (Dockerfile).
    return [*beam_args, "--requirements_file", str(REQUIREMENTS), "--requirements_cache", "skip"]


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
    if not 0 <= args.num_shards <= MAX_NUM_SHARDS:
        raise InputError(
            f"--num-shards {args.num_shards}: give 0 (from the rows) or up to "
            f"{MAX_NUM_SHARDS:,} files a split"
        )
    if not 0.0 <= args.max_rejected_fraction <= 1.0:  # also refuses nan
        raise InputError(
            f"--max-rejected-fraction {args.max_rejected_fraction}: give a share in [0, 1]"
        )
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: give a number of rows >= 1")
    config = load_config(args.config)
    args.input = folder_patterns(args.input)
    files = match_inputs(args.input)
    header = inspect_inputs(files, config)
    console.import_tensorflow(args.verbose)  # the flags, config and inputs are good
    output = args.output.rstrip("/")
    options = Options(with_worker_requirements(beam_args), save_main_session=False)
    cache_signatures()  # building, translating and running the job read them thousands of times
    dry_run = bool(options.view_as(TestOptions).dry_run)
    if "Dataflow" in str(options.view_as(StandardOptions).runner):
        check_on_cloud_storage(args.input, output, dry_run)
    this_run = None if dry_run else commit.begin(output, args.overwrite, [f.path for f in files])

    with process.imports_without_gc():
        import tensorflow_transform as tft
        import tensorflow_transform.beam  # noqa: F401  (for the graph)
        from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

        from pipeline import features

    build_args = {
        "batch_size": args.batch_size,
        "num_shards": args.num_shards,
        "first_file": files[0].path,
    }
    if dry_run:
        if "Dataflow" not in str(options.view_as(StandardOptions).runner):
            raise InputError("--dry_run is a DataflowRunner option; add --runner DataflowRunner")
        from pipeline import dry_run as dataflow_dry_run

        work_dir = artifacts.join(output, artifacts.WORK_DIR)
        return dataflow_dry_run.dry_run(
            options, config, args.input, header, output, work_dir, **build_args
        )

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
        with new_pipeline(options, default_runner(options)) as p:
            build(p, config, args.input, header, staging, work_dir, **build_args)
        elapsed = time.time() - started
        LOG.info("Beam pipeline finished in %.1f s; summarizing", elapsed)

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
        feature_statistics.write(staging, stats, config, features.raw_schema(config))
        artifacts.write_json(staging, artifacts.CONFIG, config.to_dict())
        artifacts.write_text(
            staging, artifacts.REPORT, report.render(stats, config, f"Pipeline report: {output}")
        )
        warn_of_float32(stats)
        rows = stats["rows"]
        LOG.info(
            "Rows: %s read (%s rows/s over both passes), %s train, %s validation, %s eval, "
            "%s rejected",
            f"{rows['read']:,}",
            f"{rows['read'] / max(elapsed, 1e-9):,.0f}",
            f"{rows['train']:,}",
            f"{rows['validation']:,}",
            f"{rows['eval']:,}",
            f"{rows['rejected']:,}",
        )
        if rows["read"] != rows["train"] + rows["validation"] + rows["eval"] + rows["rejected"]:
            raise RuntimeError(f"rows do not add up: {rows}")
        check_written(rows, json.loads(artifacts.read_text(work_dir, WRITTEN)))
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
    except BaseException as e:
        commit.abandon(this_run)
        if out_of_space(e):
            raise InputError(
                f"--output {output}: no space left on the device while writing the run beside "
                f"it ({staging}, deleted); until the commit the run needs room for the decoded "
                "rows it keeps between its passes (about 2.5 times the size of a CSV input) "
                "and its sorted runs (the uncompressed size of the examples) besides the output"
            ) from None
        raise
    LOG.info("Wrote %s", output)
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    environments.require(environments.PIPELINE, "python -m pipeline")
    console.configure_logging(console.start(argv))
    quiet_beam_input_errors()  # a damaged input is said in one line, below
    try:
        stats = run(argv)
    except (ConfigError, InputError, TooManyRejected, commit.CommitError) as e:
        LOG.error("%s", e)
        return 2
    if stats.get("dry_run"):
        print(stats["summary"])
        return 0
    print(json.dumps({"rows": stats["rows"]}, indent=2))
    return 0
