"""The two environments: a command started in the wrong one is one line naming the right one,
and the commands' --help, --version and config errors answer without importing TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from common import environments
from tests.conftest import ENVIRONMENT, ROOT

ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True
    )


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_a_command_in_the_wrong_environment_is_one_line_naming_the_right_one(flag):
    if ENVIRONMENT is None:
        pytest.skip("neither environment")
    module, right = {
        environments.PIPELINE: ("trainer.task", environments.TRAINER),
        environments.TRAINER: ("pipeline", environments.PIPELINE),
    }[ENVIRONMENT]
    done = subprocess.run(
        [sys.executable, "-m", module, flag], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"python -m {module} runs in the {right} environment")
    assert f"bash scripts/setup.sh {right}" in line
    assert f"is the {ENVIRONMENT} environment" in line


CHECK = """
import sys
from {module} import main
for argv in ([\"--help\"], [\"--version\"], {config_error}):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    print(\"exit\", code)
print(\"imported:\", sorted(m for m in sys.modules if m.split('.')[0] in
      (\"tensorflow\", \"tensorflow_transform\", \"tensorflow_estimator\", \"keras\")))
"""


@pytest.mark.pipeline_env
def test_pipeline_help_version_and_config_errors_import_no_tensorflow(write_config):
    bad = write_config("[input]\nformat = 'xml'\n")
    error = ["--config", str(bad), "--input", "x.csv", "--output", "o"]
    done = _python(CHECK.format(module="pipeline.run", config_error=error))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("exit 0") == 2 and "exit 2" in done.stdout
    assert "imported: []" in done.stdout
    assert "pipeline environment: tensorflow 2.21" in done.stdout
    assert "input.format = 'xml' is not one of" in done.stderr


@pytest.mark.trainer_env
def test_trainer_help_version_and_flag_errors_import_no_tensorflow(tmp_path):
    error = ["--pipeline-output", str(tmp_path / "none"), "--model-dir", "m", "--train-steps", "1"]
    done = _python(CHECK.format(module="trainer.task", config_error=error))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("exit 0") == 2 and "exit 2" in done.stdout
    assert "imported: []" in done.stdout
    assert "trainer environment: tensorflow 2.15.1, tensorflow-estimator 2.15.0" in done.stdout
    assert "no such pipeline output" in done.stderr
