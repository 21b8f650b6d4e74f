"""The Dataflow path, offline: the package Dataflow ships, and the job it would run, built with
`--dry_run True` (no network, no credentials)."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
import sys
import tarfile
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import SetupOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.portability.stager import Stager

from examples.clicks import generate
from pipeline import run as pipeline_run
from pipeline.input_files import InputError
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
    # What pip installs on a worker with the sdist: the common base, none of the trainer's
    # TensorFlow (the workers' stack comes from the requirements file or the image).
    with tarfile.open(sdist) as archive:
        [info] = [n for n in archive.getnames() if n.count("/") == 1 and n.endswith("PKG-INFO")]
        metadata = archive.extractfile(info).read().decode()
    required = re.findall(r"^Requires-Dist: (.*)$", metadata, re.MULTILINE)
    base = [r for r in required if "extra ==" not in r]
    assert base and not [r for r in base if re.match(r"(tensorflow|tfx|apache-beam)", r)], base
    assert any(r.startswith("tensorflow==2.15.1") and "trainer" in r for r in required)


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
        "SpillTrain",
        "SpillEval",
        "Decode",
        "Vocabularies[path]",
        "TransformTrain",
        "TransformEval",
        "WriteTransformGraph",
        "WriteTrain",
        "WriteEval",
        "WriteRejected",
        "WriteMeasurements",
    ):
        assert step in labels, step

    # The workers install the pipeline environment's lock: the job stages exactly that file.
    requirements = str(pipeline_run.REQUIREMENTS)
    assert job.options.view_as(SetupOptions).requirements_file == requirements
    staged = {}
    for environment in job.proto_pipeline.components.environments.values():
        for artifact in environment.dependencies:
            payload = beam_runner_api_pb2.ArtifactFilePayload.FromString(artifact.type_payload)
            role = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
                artifact.role_payload
            )
            staged[role.staged_name] = payload.path
    with open(requirements, "rb") as mine, open(staged["requirements.txt"], "rb") as theirs:
        assert theirs.read() == mine.read()

    # The CLI's line for 2,000 files, against the figures of the 2-file job.
    printed = capsys.readouterr().out
    python = ".".join(map(str, sys.version_info[:2]))
    assert (
        f"workers run Beam SDK {beam.__version__} on Python {python} with the requirements "
        f"file {requirements}; nothing was submitted"
    ) in printed
    line = re.search(r"Dry run: ([\d,]+) transforms, ([\d,]+) bytes of job description", printed)
    assert line, printed
    transforms, size = (int(group.replace(",", "")) for group in line.groups())
    assert transforms == small["transforms"] == len(job.proto_pipeline.components.transforms)
    assert small["job_bytes"] >= len(job.proto_pipeline.SerializeToString())
    assert abs(size - small["job_bytes"]) < 2_000  # the patterns' lengths differ, nothing else
    # One read per file took minutes here to build over 2,000 files; the same job now costs
    # what the 2-file one does, whatever the machine's load.
    assert many_seconds < two_seconds + 30, (many_seconds, two_seconds)


def _requirements(text: str) -> dict[str, set[str]]:
    """name -> the versions its `name==version ; marker` lines pin (one per Python range)."""
    pins = {}
    for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)", text, re.MULTILINE):
        pins.setdefault(name, set()).add(version)
    return pins


def test_the_workers_requirements_are_the_pipeline_lock_exported():
    """requirements/pipeline.txt is what the command in its header writes from uv.lock now,
    pins every package with hashes, holds none of the trainer's TensorFlow, and pins what this
    (the pipeline) environment runs."""
    text = pipeline_run.REQUIREMENTS.read_text()
    header = text.splitlines()[1].lstrip("# ")
    command = shlex.split(header)
    assert command[:2] == ["uv", "export"] and "--frozen" in command, header
    command = command[: command.index("-o")] + ["--quiet", "--no-header"]
    fresh = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    body = "".join(line for line in text.splitlines(True) if not line.startswith("#"))
    assert body == fresh, f"requirements/pipeline.txt is stale: rerun `{header}`"

    pins = _requirements(text)
    lines = re.findall(r"^[A-Za-z0-9_.-]+==.*\\$", text, re.MULTILINE)
    assert len(pins) > 100 and len(lines) >= len(pins)
    assert text.count("--hash=sha256:") >= len(lines)  # every pin with its hashes
    assert "tensorflow-estimator" not in pins and "pytest" not in pins
    assert pins["tensorflow"] == {importlib.metadata.version("tensorflow")} != {"2.15.1"}
    for name in ("apache-beam", "tensorflow-transform", "tfx-bsl", "numpy", "pyarrow", "dill"):
        assert importlib.metadata.version(name) in pins[name], name


def test_only_dataflow_without_requirements_or_image_gets_the_lock():
    added = ["--requirements_file", str(pipeline_run.REQUIREMENTS), "--requirements_cache", "skip"]
    assert pipeline_run.with_worker_requirements(DATAFLOW) == [*DATAFLOW, *added]
    for given in (
        [],
        ["--runner", "DirectRunner"],
        [*DATAFLOW, "--requirements_file", "mine.txt"],
        [*DATAFLOW, "--sdk_container_image", "gcr.io/p/pipeline:1"],
    ):
        assert pipeline_run.with_worker_requirements(given) == given


def test_the_summary_names_a_container_image():
    from pipeline import dry_run

    figures = {"transforms": 3, "graph_bytes": 10, "job_bytes": 20, "beam_sdk": "2.77.0"}
    line = dry_run.summary_line(
        {**figures, "worker_python": "3.12", "sdk_container_image": "gcr.io/p/pipeline:1"}
    )
    assert "workers run Beam SDK 2.77.0 on Python 3.12 with the container image gcr.io/p/" in line


def test_the_dockerfile_starts_from_the_locked_beam_and_python():
    dockerfile = (ROOT / "Dockerfile").read_text()
    [image] = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    python = "".join(map(str, sys.version_info[:2]))
    assert image == f"apache/beam_python{python[0]}.{python[1:]}_sdk:{beam.__version__}"
    assert "requirements/pipeline.txt" in dockerfile and "--require-hashes" in dockerfile


def test_options_dataflow_refuses_are_one_error_naming_them(tmp_path):
    data = _small_csv_files(tmp_path / "two", 2)
    args = [a if a != "my-project" else "p" for a in _dry_run_args(data)]
    with pytest.raises(
        InputError, match=r"the pipeline options are not valid: Invalid Project ID \(p\)"
    ):
        pipeline_run.run(args)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            ("gs://my-bucket/tmp", "gs://My_Bucket/tmp"),
            r"not valid: Invalid GCS bucket \(gs://My_Bucket/tmp\), given for the option: "
            "temp_location",
        ),
        (
            ("--temp_location", "--staging_location"),
            None,  # a staging location alone is enough: Beam uses it for both
        ),
        (
            ("gs://my-bucket/tmp", None),
            "a Dataflow dry run needs --temp_location gs://BUCKET/PATH",
        ),
    ],
)
def test_the_job_locations_are_checked_before_beam_looks_up_a_default_bucket(
    tmp_path, monkeypatch, change, message
):
    # Where neither location is a valid gs:// path Beam falls back to the project's default
    # bucket, looked up over the network: minutes of waiting offline, or, online, the job's
    # files somewhere the user did not name.
    from apache_beam.io.gcp import gcsio

    def network(*args, **kwargs):
        raise AssertionError("Beam looked up a default bucket")

    monkeypatch.setattr(gcsio, "get_or_create_default_gcs_bucket", network)
    data = _small_csv_files(tmp_path / "two", 2)
    old, new = change
    args = _dry_run_args(data)
    if new is None:
        at = args.index(old)
        del args[at - 1 : at + 1]
    else:
        args = [new if a == old else a for a in args]
    if message is None:
        assert pipeline_run.run(args)["dry_run"]
    else:
        with pytest.raises(InputError, match=message):
            pipeline_run.run(args)


def test_a_dataflow_job_on_this_machines_disk_is_refused(tmp_path, caplog):
    # Dataflow's workers cannot read a file of the launcher's disk, nor write there; a dry
    # run (offline) only warns.
    data = _small_csv_files(tmp_path / "two", 2)
    real = [a for a in _dry_run_args(data) if a not in ("--dry_run", "True")]
    with pytest.raises(InputError, match=r"--input .* is on this machine's disk"):
        pipeline_run.run(real)
    with pytest.raises(InputError, match=r"--output /local/out is on this machine's disk"):
        pipeline_run.check_on_cloud_storage(["gs://b/in-*.csv"], "/local/out", dry_run=False)
    pipeline_run.check_on_cloud_storage(["gs://b/in-*.csv"], "gs://b/out", dry_run=False)
    assert pipeline_run.run(_dry_run_args(data))["dry_run"]
    assert "the dry run goes on; a submitted job would fail" in caplog.text
