"""Shared fixtures: the example config, small configs written on the fly, the environments.

Two environments run the tests (common/environments.py): the pipeline's (`.venvs/pipeline/`)
and the trainer's (`.venv/`). A test that needs one is marked `pipeline_env` or `trainer_env`
and skipped, with the reason, in the other; unmarked tests run in both. A test of the trainer
on a pipeline's output runs the pipeline as the user does, `python -m pipeline` in the
pipeline environment's Python (PIPELINE_PYTHON, or `.venvs/pipeline/bin/python`), and is
skipped if there is none.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from common import environments

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = ROOT / "examples" / "clicks" / "features.toml"
VALIDATION_LINE = re.compile(r"^validation_fraction = .*\n", re.MULTILINE)


def example_config_text(validation: bool = True) -> str:
    """The example config; without `validation`, less its validation split: nothing is
    selected and the last checkpoint is the model, as the tests of training mechanics
    (resume, export, a kill) expect."""
    text = EXAMPLE_CONFIG.read_text()
    assert len(VALIDATION_LINE.findall(text)) == 1
    return text if validation else VALIDATION_LINE.sub("", text)


ENVIRONMENT = environments.current()
ENV_MARKERS = {f"{role}_env": role for role in (environments.PIPELINE, environments.TRAINER)}

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def needs(role: str) -> str:
    """The reason a test of `role` is skipped here."""
    return f"needs {environments.SETUP[role]}; {environments.describe()}"


def pytest_collection_modifyitems(config, items):
    """Skips each test marked for the other environment; a test's own marker overrides its
    module's."""
    for item in items:
        markers = (m.name for m in item.iter_markers() if m.name in ENV_MARKERS)
        role = ENV_MARKERS.get(next(markers, ""))
        if role and role != ENVIRONMENT:
            item.add_marker(pytest.mark.skip(reason=needs(role)))


def pipeline_python() -> str | None:
    """The pipeline environment's Python: $PIPELINE_PYTHON, or the project's
    `.venvs/pipeline/bin/python`; None if there is none."""
    python = os.environ.get("PIPELINE_PYTHON") or str(ROOT / ".venvs/pipeline/bin/python")
    return python if os.access(python, os.X_OK) else None


def python_for(module: str) -> str:
    """The Python that runs `python -m MODULE` as a user would: the pipeline environment's for
    `pipeline`, the trainer environment's for `trainer.task`, this one for the rest (the
    planner runs in both); skips the test when that environment is not here."""
    role = {"pipeline": environments.PIPELINE, "trainer.task": environments.TRAINER}.get(module)
    if role is None or role == ENVIRONMENT:
        return sys.executable
    if role == environments.PIPELINE and pipeline_python():
        return pipeline_python()
    pytest.skip(needs(role))


def run_pipeline(argv: list[str]) -> dict:
    """Runs `python -m pipeline ARGV` and returns the stats it wrote: in this process in the
    pipeline environment, else as a command in the pipeline environment's Python (skipped if
    there is none), as a user runs it before training."""
    if ENVIRONMENT == environments.PIPELINE:
        from pipeline.run import run

        return run(argv)
    python = pipeline_python()
    if python is None:
        pytest.skip(
            f"runs the pipeline in {environments.SETUP[environments.PIPELINE]}: none found "
            "(set PIPELINE_PYTHON)"
        )
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        [python, "-m", "pipeline", *argv], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.fail(f"python -m pipeline failed in {python}:\n{done.stderr[-4000:]}")
    output = argv[argv.index("--output") + 1]
    with open(os.path.join(output, "stats.json")) as f:
        return json.load(f)


@pytest.fixture
def write_config(tmp_path):
    """Writes TOML text (dedented) to a file and returns its path."""

    def write(text: str, name: str = "features.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


GCS_BUCKET = "test-bucket"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_bucket(tmp_path_factory):
    """A real Cloud Storage JSON API server on a free local port (the `gcp-storage-emulator`
    package, in memory), serving Beam's `gs://` I/O in this process; yields `gs://BUCKET`.

    Beam's GCS client honours `STORAGE_EMULATOR_HOST` and then needs no project. Before it
    connects anonymously, Beam looks for Application Default Credentials and retries the
    failed lookup with backoff for about 20 s; the fixture answers that lookup with anonymous
    credentials at once. TensorFlow's own gs:// cannot be pointed at the emulator.
    """
    import google.auth
    from google.auth.credentials import AnonymousCredentials

    port = _free_port()
    # A file, not a pipe: the server logs every request, and a full pipe would stall it.
    log = open(tmp_path_factory.mktemp("gcs") / "emulator.log", "w+b")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1"]
        + ["--port", str(port), "--in-memory", "--default-bucket", GCS_BUCKET],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b/{GCS_BUCKET}", timeout=1).read()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                log.seek(0)
                pytest.fail(f"the storage emulator did not start: {log.read()[-2000:]!r}")
            time.sleep(0.1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("STORAGE_EMULATOR_HOST", url)
            patch.setattr(google.auth, "default", lambda *a, **k: (AnonymousCredentials(), None))
            yield f"gs://{GCS_BUCKET}"
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


@pytest.fixture
def gcs_root(gcs_bucket):
    """A fresh folder in the emulator's bucket for one test."""
    return f"{gcs_bucket}/{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["local", "gcs"])
def any_root(request, tmp_path):
    """A fresh folder on the local disk, then in the emulator's bucket."""
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("gcs_root")


SMALL_ROWS = 2000


@pytest.fixture(scope="session")
def small_pipeline_output(tmp_path_factory):
    """A finished pipeline output (with its plan) over 2,000 generated example rows.

    Written by the pipeline environment (in this process, or as a command from the trainer's).

    Returns:
      dict with `data` (the raw CSV), `output` (OUTPUT), `stats` and `plan`.
    """
    from embedding.planner import plan_pipeline_output
    from examples.clicks.generate import generate, write_csv

    root = tmp_path_factory.mktemp("small")
    data = str(root / "clicks.csv")
    write_csv(data, generate(SMALL_ROWS, seed=11))
    output = str(root / "pipeline")
    config = root / "features.toml"
    config.write_text(example_config_text(validation=False))
    stats = run_pipeline(["--config", str(config), "--input", data, "--output", output])
    plan = plan_pipeline_output(output)
    return {"data": data, "output": output, "stats": stats, "plan": plan}


def raw_example(row: dict) -> bytes:
    """A serialized RAW tf.Example of one example-data row (a csv.DictReader dict), as a
    client of the serving model sends it."""
    import tensorflow as tf

    example = tf.train.Example()
    feature = example.features.feature
    for name in ("item_id", "region", "device"):
        feature[name].bytes_list.value.append(row[name].encode())
    feature["history"].bytes_list.value.extend(t.encode() for t in row["history"].split())
    feature["price"].float_list.value.append(float(row["price"]))
    return example.SerializeToString()
