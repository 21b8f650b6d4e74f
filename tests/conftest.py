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


SMALL_ROWS = 2000


@pytest.fixture(scope="session")
def small_pipeline_output(tmp_path_factory):
    """A finished pipeline output (with its plan) over 2,000 generated example rows.

    Returns:
      dict with `data` (the raw CSV), `output` (OUTPUT), `stats` and `plan`.
    """
    from embedding.planner import plan_pipeline_output
    from examples.clicks.generate import generate, write_csv
    from pipeline.run import run as run_pipeline

    root = tmp_path_factory.mktemp("small")
    data = str(root / "clicks.csv")
    write_csv(data, generate(SMALL_ROWS, seed=11))
    output = str(root / "pipeline")
    stats = run_pipeline(["--config", str(EXAMPLE_CONFIG), "--input", data, "--output", output])
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
