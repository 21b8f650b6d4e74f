"""Each command prints its own lines only, and a mistake is still its one clear line.

The commands run as a user runs them (`python -m ...` in a subprocess, with an environment
that sets neither TF_CPP_MIN_LOG_LEVEL nor PYTHONWARNINGS), on a tiny input.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common import console
from common.progress import Progress, duration
from tests.conftest import python_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "examples" / "clicks" / "features.toml"


def _env() -> dict[str, str]:
    """The environment without the settings a user would not have made."""
    unset = ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS", console.VERBOSE_ENV)
    return {k: v for k, v in os.environ.items() if k not in unset}


def _run(*args: str) -> subprocess.CompletedProcess:
    """`python -m ARGS` in the environment that runs the module (tests.conftest.python_for)."""
    return subprocess.run(
        [python_for(args[0]), "-m", *args], cwd=ROOT, env=_env(), capture_output=True, text=True
    )


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(n in line for n in console.KNOWN_NOISE)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from examples.clicks.generate import generate, write_csv

    root = tmp_path_factory.mktemp("tiny")
    data = root / "clicks.csv"
    write_csv(str(data), generate(400, seed=3))
    return root, data


@pytest.mark.slow
def test_each_command_prints_only_its_own_lines_and_verbose_brings_the_logs_back(tiny):
    root, data = tiny
    output, model = root / "out", root / "model"
    pipeline = _run(
        "pipeline", "--config", str(EXAMPLE_CONFIG), "--input", str(data), "--output", str(output)
    )
    assert pipeline.returncode == 0, pipeline.stderr
    assert _noise(pipeline.stderr) == []
    assert all(line.startswith("pipeline: ") for line in pipeline.stderr.splitlines())
    assert "pipeline: Rows: 400 read" in pipeline.stderr

    plan = _run("embedding", "--pipeline-output", str(output))
    assert plan.returncode == 0, plan.stderr
    assert plan.stderr == ""

    trainer = _run(
        "trainer.task",
        "--pipeline-output",
        str(output),
        "--model-dir",
        str(model),
        "--train-steps",
        "20",
        "--batch-size",
        "32",
        "--no-export",
    )
    assert trainer.returncode == 0, trainer.stderr
    assert _noise(trainer.stderr) == []
    assert all(line.startswith("trainer: ") for line in trainer.stderr.splitlines())

    verbose = _run(
        "pipeline",
        "--config",
        str(EXAMPLE_CONFIG),
        "--input",
        str(data),
        "--output",
        str(output),
        "--overwrite",
        "-v",
    )
    assert verbose.returncode == 0, verbose.stderr
    assert "Converting string literal type hint to Any" in verbose.stderr


@pytest.mark.parametrize(
    "args, line",
    [
        (
            [
                "pipeline",
                "--config",
                str(EXAMPLE_CONFIG),
                "--input",
                "/nonexistent/*.csv",
                "--output",
                "/tmp/never-written",
            ],
            "/nonexistent/*.csv",
        ),
        (["embedding", "--pipeline-output", "/nonexistent/output"], "/nonexistent/output"),
        (
            [
                "trainer.task",
                "--pipeline-output",
                "/nonexistent/output",
                "--model-dir",
                "/tmp/never-written",
                "--train-steps",
                "1",
            ],
            "/nonexistent/output",
        ),
    ],
)
def test_a_missing_input_is_one_clear_line(args, line):
    result = _run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert line in lines[0]
    assert "Traceback" not in result.stderr


def test_a_bad_config_key_is_one_clear_line(tmp_path):
    config = tmp_path / "features.toml"
    config.write_text(EXAMPLE_CONFIG.read_text().replace("[sequence]", "[sequence]\nlenght = 3"))
    result = _run(
        "pipeline", "--config", str(config), "--input", "x.csv", "--output", str(tmp_path / "o")
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"pipeline: ERROR: {config}: unknown key sequence.lenght; known keys in [sequence] are: "
        "length_coverage"
    ]


@pytest.mark.parametrize("module", ["pipeline", "embedding", "trainer.task"])
def test_version_and_usage(module):
    version = _run(module, "--version")
    assert version.returncode == 0
    # One line with the project's version; the pipeline and the trainer also name their stack.
    assert len(version.stdout.strip().splitlines()) == 1
    assert console.version() in version.stdout
    if module != "embedding":
        role = "pipeline" if module == "pipeline" else "trainer"
        assert f"({role} environment: tensorflow " in version.stdout
    bare = _run(module)
    assert bare.returncode == 2
    assert bare.stderr.startswith(f"usage: python -m {module}")
    assert "Traceback" not in bare.stderr


def test_a_real_warning_still_shows():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import warnings; from common import console; console.start([]); "
            "warnings.warn('`tf.layers.dense` is deprecated'); warnings.warn('a real one')",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert "a real one" in result.stderr
    assert "tf.layers.dense" not in result.stderr


def test_dataflows_advice_to_prebuild_is_dropped_and_its_job_lines_kept():
    script = (
        "import logging; from common import console; console.start([]); "
        "console.configure_logging(False); "
        "log = logging.getLogger('apache_beam.runners.dataflow.dataflow_runner'); "
        "log.warning('Pipeline has additional dependencies to be installed in SDK worker "
        "container, consider using the SDK container image pre-building workflow to avoid "
        "repetitive installations.'); "
        "log.info('Created job with id: [2026-12-07_01]')"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=_env(), capture_output=True, text=True
    )
    assert result.stderr.strip().splitlines() == [
        "apache_beam.runners.dataflow.dataflow_runner: Created job with id: [2026-12-07_01]"
    ]


def test_a_verbose_command_starts_verbose_processes():
    # Beam's local workers (--direct_running_mode multi_processing) are processes the
    # command starts: with -v they show the libraries' logs as the command does.
    child = "from common import console; print(console.start([]))"
    script = (
        "import subprocess, sys; from common import console; "
        f"console.start(sys.argv[1:]); subprocess.run([sys.executable, '-c', {child!r}])"
    )
    said = {
        flag: subprocess.run(
            [sys.executable, "-c", script, *flag], cwd=ROOT, env=_env(), capture_output=True
        ).stdout
        for flag in ((), ("-v",))
    }
    assert said == {(): b"False\n", ("-v",): b"True\n"}


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_in_a_pipe_is_a_line_every_few_seconds(caplog):
    clock = _Clock()
    logger = logging.getLogger("trainer")
    progress = Progress(
        logger, "training", 1000, "steps", every_s=10, stream=io.StringIO(), clock=clock
    )
    with caplog.at_level(logging.INFO, logger="trainer"):
        for step in range(0, 1001, 50):
            clock.now = step / 50  # 50 steps a second
            progress.update(step, "loss 0.5000")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "training: 500/1,000 steps (50%), 50 steps/s, loss 0.5000, 10s left",
        "training: 1,000/1,000 steps (100%), 50 steps/s, loss 0.5000, 0s left",
    ]
    assert duration(3725) == "1h02m" and duration(185) == "3m05s"


def test_progress_on_a_terminal_redraws_one_bar(caplog):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = Progress(logging.getLogger("trainer"), "training", 100, "steps", stream=stream)
    with caplog.at_level(logging.INFO, logger="trainer"):
        for step in range(0, 101, 10):
            progress.update(step, "loss 0.1")
        progress.close()
    assert caplog.records == []
    drawn = stream.getvalue()
    assert "\r" in drawn and "100/100" in drawn and "loss 0.1" in drawn
