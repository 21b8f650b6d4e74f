"""The Dataflow path, offline: the package Dataflow ships, and the job graph it would run."""

from __future__ import annotations

import tarfile

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.stager import Stager

from common.config import load_config
from pipeline import run as pipeline_run
from tests.conftest import EXAMPLE_CONFIG, ROOT

pytestmark = pytest.mark.slow

HEADER = ["user_id", "item_id", "history", "device", "region", "price", "clicked"]


def test_setup_py_sdist_carries_every_package(tmp_path):
    # What Beam's stager does with --setup_file ./setup.py before submitting a job.
    sdist = Stager._build_setup_package(str(ROOT / "setup.py"), str(tmp_path))
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for module in (
        "pipeline/run.py",
        "pipeline/preprocessing.py",
        "embedding/planner.py",
        "embedding/columns.py",
        "trainer/task.py",
        "trainer/model.py",
        "pyproject.toml",
        "setup.py",
    ):
        assert module in names, module


def test_dataflow_job_graph_builds_offline(tmp_path):
    options = PipelineOptions(
        [
            "--runner",
            "DataflowRunner",
            "--project",
            "my-project",
            "--region",
            "us-central1",
            "--temp_location",
            "gs://my-bucket/tmp",
            "--setup_file",
            str(ROOT / "setup.py"),
            "--dry_run",
            "True",
        ]
    )
    p = beam.Pipeline(options=options)
    pipeline_run.build(
        p,
        load_config(EXAMPLE_CONFIG),
        ["gs://my-bucket/raw/part-0.csv.gz", "gs://my-bucket/raw/part-1.csv.gz"],
        HEADER,
        "gs://my-bucket/clicks",
        "gs://my-bucket/clicks/.work",
        transform_temp_dir=str(tmp_path / "tft"),
    )
    result = p.run()  # a dry run builds the Dataflow job and returns it unsubmitted
    job = result.job
    assert job.proto.type.name == "JOB_TYPE_BATCH"
    labels = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    for step in (
        "ReadRaw",
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
    assert job.google_cloud_options.project == "my-project"
