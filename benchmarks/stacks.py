"""The pipeline on the two stacks side by side, on the same generated data, in one run.

    .venvs/pipeline/bin/python -m benchmarks.stacks              # 1,000 and 50,000 rows
    .venvs/pipeline/bin/python -m benchmarks.stacks --rows 1000 --rounds 3

The old stack is the trainer environment's (`.venv/`: TensorFlow 2.15, tf.Transform 1.15,
Beam 2.60, the stack the pipeline ran on before it had its own environment); the new one the
pipeline environment's (`.venvs/pipeline/`: TensorFlow 2.21, tf.Transform 1.21, Beam 2.77).
Per environment and size, whole processes, the fastest of `--rounds`:

- the import floor: `python -c "import tensorflow, tensorflow_transform, apache_beam"`;
- the pipeline: `pipeline.run.run`, the function `python -m pipeline` calls, started as
  `python -m benchmarks.stacks --pipeline ARGS`; that entry skips only the command's refusal to
  run in the trainer environment, so the same code runs on both stacks;
- the fixed cost: the smallest size's run above the floor (the issue's bound: 2 s).

Then it compares what the two stacks wrote at each size, byte for byte: stats.json, the
vocabularies and the TFRecord files (named without the run id). Prints a table and writes
benchmarks/stacks.json. Machines are noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.run import CONFIG, ROOT, _timed

ENVIRONMENTS = {
    "old": ROOT / ".venv" / "bin" / "python",
    "new": ROOT / ".venvs" / "pipeline" / "bin" / "python",
}
IMPORTS = "import tensorflow, tensorflow_transform, apache_beam"
STACK = ("tensorflow", "tensorflow-transform", "apache-beam", "pyarrow", "numpy")


def _run_pipeline(argv: list[str]) -> int:
    """`python -m pipeline ARGV` without its environment check (see the module docstring)."""
    import logging

    from pipeline.run import run

    logging.basicConfig(level=logging.WARNING)
    run(argv)
    return 0


def _versions(python: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys; "
        f"print(json.dumps({{n: m.version(n) for n in {STACK!r}}} | "
        "{'python': sys.version.split()[0]}))"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def _written(output: Path) -> dict[str, bytes]:
    """stats.json, the vocabularies and the TFRecords of OUTPUT by name, without the run id."""
    from common import artifacts

    manifest = artifacts.read_manifest(str(output))
    files = {"stats.json": (output / "stats.json").read_bytes()}
    for path in sorted((output / "transform_fn" / "assets").iterdir()):
        files[f"vocabulary {path.name}"] = path.read_bytes()
    for split in artifacts.SPLITS:
        for path in manifest.data_files(split):
            name = os.path.basename(path).replace(f"-{manifest.run_id}", "")
            files[name] = Path(path).read_bytes()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000, 50_000])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each; the fastest counts")
    parser.add_argument("--old", type=Path, default=ENVIRONMENTS["old"], help="its Python")
    parser.add_argument("--new", type=Path, default=ENVIRONMENTS["new"], help="its Python")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "stacks.json")
    args = parser.parse_args(argv)
    pythons = {"old": args.old, "new": args.new}
    work = Path(tempfile.mkdtemp(prefix="stacks-"))
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "stacks": {name: _versions(python) for name, python in pythons.items()},
        "rounds": args.rounds,
        "import_floor_s": {},
        "runs": [],
    }
    for name, python in pythons.items():
        results["import_floor_s"][name] = min(
            _timed([str(python), "-c", IMPORTS])[0] for _ in range(args.rounds)
        )
    for rows in args.rows:
        data = work / f"clicks-{rows}.csv"
        subprocess.run(
            [sys.executable, "-m", "examples.clicks.generate", "--rows", str(rows)]
            + ["--output", str(data)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        run = {"rows": rows}
        for name, python in pythons.items():
            output = work / f"out-{name}-{rows}"
            command = [str(python), "-m", "benchmarks.stacks", "--pipeline"]
            command += ["--config", str(CONFIG), "--input", str(data), "--output", str(output)]
            timings = [_timed([*command, "--overwrite"]) for _ in range(args.rounds)]
            run[f"{name}_s"] = min(seconds for seconds, _ in timings)
            run[f"{name}_peak_mib"] = max(mib for _, mib in timings)
            run[f"{name}_above_floor_s"] = run[f"{name}_s"] - results["import_floor_s"][name]
        old, new = (_written(work / f"out-{name}-{rows}") for name in ("old", "new"))
        run["files_compared"] = len(old)
        run["files_differing"] = sorted(
            set(old) ^ set(new) | {f for f in set(old) & set(new) if old[f] != new[f]}
        )
        run["new_over_old"] = run["new_s"] / run["old_s"]
        results["runs"].append(run)
        print(json.dumps(run), flush=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def print_table(results: dict) -> None:
    print(f"\nMachine: {results['machine']}; fastest of {results['rounds']} runs, whole process")
    for name, stack in results["stacks"].items():
        print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in stack.items()))
    floor = results["import_floor_s"]
    print(f"{'':28}{'old':>10}{'new':>10}")
    print(f"{'import floor (s)':28}{floor['old']:>10.1f}{floor['new']:>10.1f}")
    for run in results["runs"]:
        label = f"pipeline, {run['rows']:,} rows (s)"
        print(f"{label:28}{run['old_s']:>10.1f}{run['new_s']:>10.1f}")
        print(
            f"{'  above the floor (s)':28}"
            f"{run['old_above_floor_s']:>10.1f}{run['new_above_floor_s']:>10.1f}"
        )
        same = "all identical" if not run["files_differing"] else run["files_differing"]
        print(f"{'  files compared':28}{run['files_compared']:>10}  {same}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pipeline"]:
        sys.exit(_run_pipeline(sys.argv[2:]))
    sys.exit(main())
