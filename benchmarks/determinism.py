"""What TensorFlow's op determinism (`--deterministic`, the default) costs the trainer on CPU.

Trains the same model from scratch with `--deterministic` and `--no-deterministic`, in
alternating whole processes, and prints steps/s of each and their ratio. Run:

    .venv/bin/python -m benchmarks.determinism [--rows 20000] [--steps 600] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args: list[str]) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout + done.stderr


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="determinism-")
    data, output = os.path.join(work, "clicks.csv"), os.path.join(work, "out")
    _run(["-m", "examples.clicks.generate", "--rows", str(args.rows), "--output", data])
    _run(
        [
            "-m",
            "pipeline",
            "--config",
            "examples/clicks/features.toml",
            "--input",
            data,
            "--output",
            output,
        ]
    )
    rates: dict[str, list[float]] = {"--deterministic": [], "--no-deterministic": []}
    for round_ in range(args.rounds):
        for flag in rates:
            model = os.path.join(work, f"model-{round_}-{flag.strip('-')}")
            log = _run(
                [
                    "-m",
                    "trainer.task",
                    "--pipeline-output",
                    output,
                    "--model-dir",
                    model,
                    "--train-steps",
                    str(args.steps),
                    "--no-export",
                    flag,
                ]
            )
            (rate,) = re.findall(r"Trained \d+ steps in [\d.]+ s \(([\d.]+) steps/s", log)[-1:]
            rates[flag].append(float(rate))
    medians = {flag: statistics.median(v) for flag, v in rates.items()}
    print(
        json.dumps(
            {
                "steps_per_second": rates,
                "median": medians,
                "deterministic_over_not": medians["--deterministic"]
                / medians["--no-deterministic"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
