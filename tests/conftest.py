"""Shared fixtures: the example config, and small configs written on the fly."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = ROOT / "examples" / "clicks" / "features.toml"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def write_config(tmp_path):
    """Writes TOML text (dedented) to a file and returns its path."""

    def write(text: str, name: str = "features.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write
