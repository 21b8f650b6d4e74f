"""The Dataflow path, offline: the package Dataflow ships, and the job it would run, built with
`--dry_run True` (no network, no credentials)."""

from __future__ import annotations

import re
import tarfile
import time

import pytest
from apache_beam.runners.portability.stager import Stager

from examples.clicks import generate
from pipeline import run as pipeline_run
from tests.conftest import EXAMPLE_CONFIG, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.pipeline_env]

DATAFLOW = [
    "--runner",
    "DataflowRunner",
    "--project",
    "my-project",
    "--region",
    "us-central1",
    "--temp_location",
    "gs://my-bucket/tmp",
    "--dry_run",
    "True",
]


def test_setup_py_sdist_carries_every_package(tmp_path):
    # What Beam's stager does with --setup_file ./setup.py before submitting a job.
    sdist = Stager._build_setup_package(str(ROOT / "setup.py"), str(tmp_path))
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for module in (
        "common/config.py",
        "pipeline/run.py",
        "pipeline/graph.py",
        "pipeline/sources.py",
        "pipeline/decode_blocks.py",
        "pipeline/preprocessing.py",
        "embedding/planner.py",
        "embedding/columns.py",
        "trainer/task.py",
        "trainer/model.py",
        "pyproject.toml",
        "setup.py",
    ):
        assert module in names, module


def _small_csv_files(directory, count):
    """`count` CSV files of one example row each: header and row, about 100 bytes."""
    rows = generate.generate(count, seed=5)
    directory.mkdir()
    for i, row in enumerate(rows):
        generate.write_csv(str(directory / f"part-{i:05d}.csv"), [row])
    return str(directory / "*.csv")


def _dry_run_args(pattern):
    return [
        "--config",
        str(EXAMPLE_CONFIG),
        "--input",
        pattern,
        "--output",
        "gs://my-bucket/clicks",
        "--setup_file",
        str(ROOT / "setup.py"),
        *DATAFLOW,
    ]


def test_dry_run_job_over_2000_files_is_as_small_as_over_2(tmp_path, capsys):
    two = _small_csv_files(tmp_path / "two", 2)
    many = _small_csv_files(tmp_path / "many", 2000)

    started = time.perf_counter()
    small = pipeline_run.run(_dry_run_args(two))
    two_seconds = time.perf_counter() - started
    started = time.perf_counter()
    assert pipeline_run.main(_dry_run_args(many)) == 0
    many_seconds = time.perf_counter() - started

    # The job Dataflow would run over 2 files.
    job = small["job"]
    assert job.proto.type.name == "JOB_TYPE_BATCH"
    assert job.google_cloud_options.project == "my-project"
    labels = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    for step in (
        "ReadRaw/MatchFiles",
        "ReadRaw/ReadLines",
        "ReadRawAgain/ReadLines",
        "Decode",
        "Analyze",
        "TransformTrain",
        "TransformEval",
        "WriteTransformFn",
        "WriteTrain",
        "WriteEval",
        "WriteRejected",
        "WriteMeasurements",
    ):
        assert step in labels, step

    # The CLI's line for 2,000 files, against the figures of the 2-file job.
    printed = capsys.readouterr().out
    line = re.search(r"Dry run: ([\d,]+) transforms, ([\d,]+) bytes of job description", printed)
    assert line, printed
    transforms, size = (int(group.replace(",", "")) for group in line.groups())
    assert transforms == small["transforms"] == len(job.proto_pipeline.components.transforms)
    assert small["job_bytes"] >= len(job.proto_pipeline.SerializeToString())
    assert abs(size - small["job_bytes"]) < 2_000  # the patterns' lengths differ, nothing else
    # One read per file took minutes here to build over 2,000 files; the same job now costs
    # what the 2-file one does, whatever the machine's load.
    assert many_seconds < two_seconds + 30, (many_seconds, two_seconds)
