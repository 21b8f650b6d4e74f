"""Benchmarks, each measured side by side in one run on the same generated data.

    .venv/bin/python -m benchmarks.run                  # 10k, 100k and 1M rows, about 12 min
    .venv/bin/python -m benchmarks.run --rows 100000    # one size; --skip-baseline to skip it

1. Pipeline throughput (rows/s, ids/s) of `python -m pipeline` against the census-style
   tf.Transform pipeline (`benchmarks/baseline_pipeline.py`), as a ratio; ours also with two
   DirectRunner worker processes (`--direct_num_workers 2 --direct_running_mode
   multi_processing`).
2. The floor: the same vocabularies and length histograms in one process with pyarrow and
   numpy (no Beam, no TensorFlow); our throughput as a fraction of it.
3. Scaling: wall time and peak memory (max RSS of the process tree) per row count.
4. Trainer: examples/s of TPUEstimator(use_tpu=False) fed from the TFRecords, against the
   same model fed from an in-memory cache of the same batches, and the input_fn alone.
5. Padding: padding efficiency and ids dropped at the planned L against L = the longest.

Prints a table and writes benchmarks/results.json. Machines are noisy: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "clicks" / "features.toml"
ROUNDS = 3


def _timed(command: list[str]) -> tuple[float, float]:
    """Runs a command; returns (seconds, peak RSS in MiB of it and its children)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
    wrapped = [
        "/usr/bin/env",
        "python3",
        "-c",
        "import resource,subprocess,sys;"
        "rc=subprocess.call(sys.argv[1:],stdout=subprocess.DEVNULL,"
        "stderr=subprocess.DEVNULL);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);sys.exit(rc)",
        *command,
    ]
    started = time.perf_counter()
    done = subprocess.run(wrapped, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    return seconds, int(done.stdout.strip().splitlines()[-1]) / 1024


def _timed_pipeline(data: Path, output: Path, *beam_args: str) -> tuple[float, float]:
    """`python -m pipeline` on the example config: (seconds, peak RSS in MiB)."""
    args = ["--config", str(CONFIG), "--input", str(data), "--output", str(output)]
    return _timed([sys.executable, "-m", "pipeline", *args, *beam_args])


def floor(csv_path: str) -> dict:
    """Vocabularies and exact length histograms, vectorized in one process."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    started = time.perf_counter()
    table = pacsv.read_csv(
        csv_path,
        convert_options=pacsv.ConvertOptions(
            column_types={
                c: pa.string() for c in ("user_id", "item_id", "history", "device", "region")
            }
        ),
    )
    history = pc.split_pattern(table["history"], " ")
    tokens = pc.list_flatten(history)
    tokens = pc.filter(tokens, pc.not_equal(tokens, ""))  # an empty cell splits into [""]
    items = pa.chunked_array(tokens.chunks + table["item_id"].chunks)
    vocabularies = {
        "items": pc.value_counts(items),
        "device": pc.value_counts(table["device"]),
        "region": pc.value_counts(table["region"]),
    }
    empty = pc.equal(table["history"], "").to_numpy().astype(np.int64)
    lengths = np.bincount(pc.list_value_length(history).to_numpy() - empty)
    price = table["price"].to_numpy()
    moments = (price.mean(), price.std())
    seconds = time.perf_counter() - started
    del vocabularies, moments
    return {"seconds": seconds, "ids": int(lengths @ np.arange(len(lengths)))}


def trainer_rates(output: str, steps: int = 600, batch_size: int = 256) -> dict:
    """examples/s: training from files, from an in-memory cache, and the input_fn alone."""
    import tensorflow as tf

    from common import artifacts
    from common.config import read_pipeline_config
    from embedding.planner import load_or_make_plan
    from trainer import task
    from trainer.estimator import build_estimator
    from trainer.inputs import make_input_fn

    plan = load_or_make_plan(output)
    config = read_pipeline_config(output)
    files_fn = make_input_fn(artifacts.data_files(output, "train"), plan, training=True, seed=1)

    def cached_fn(params):
        # The same batches, parsed and prepared once, then replayed from memory.
        return files_fn(params).take(50).cache().repeat()

    results = {}
    with tf.Graph().as_default():
        dataset = files_fn({"batch_size": batch_size})
        next_batch = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
        with tf.compat.v1.Session() as session:
            session.run(next_batch)
            started = time.perf_counter()
            for _ in range(steps):
                session.run(next_batch)
            results["input_fn_alone"] = steps * batch_size / (time.perf_counter() - started)
    # Files and memory alternate, ROUNDS times each; the medians are reported (a single
    # pair of 10-second measurements on a shared 2-core machine varies by 1.5x).
    rounds = [("train_from_files", files_fn), ("train_in_memory", cached_fn)] * ROUNDS
    for name, input_fn in rounds:
        model_dir = tempfile.mkdtemp()
        args = task.parse_args(
            [
                "--pipeline-output",
                output,
                "--model-dir",
                model_dir,
                "--train-steps",
                str(steps + 50),
                "--batch-size",
                str(batch_size),
                "--save-checkpoints-steps",
                "100000",
            ]
        )
        estimator = build_estimator(args, plan, config)
        estimator.train(input_fn, max_steps=50)  # graph building, first checkpoint
        started = time.perf_counter()
        estimator.train(input_fn, max_steps=steps + 50)
        results.setdefault(f"{name}_runs", []).append(
            steps * batch_size / (time.perf_counter() - started)
        )
        shutil.rmtree(model_dir, ignore_errors=True)
    for name in ("train_from_files", "train_in_memory"):
        results[name] = statistics.median(results[f"{name}_runs"])
    results["files_over_memory_runs"] = [
        f / m
        for f, m in zip(
            results["train_from_files_runs"], results["train_in_memory_runs"], strict=True
        )
    ]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rows",
        type=int,
        action="append",
        help="row counts to measure (default: 10000, 100000 and 1000000)",
    )
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results.json"))
    args = parser.parse_args()
    row_counts = args.rows or [10_000, 100_000, 1_000_000]
    python = sys.executable
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30}"
        " GiB",
        "runs": [],
    }
    for rows in row_counts:
        data = work / f"clicks-{rows}.csv"
        subprocess.run(
            [python, "-m", "examples.clicks.generate", "--rows", str(rows), "--output", str(data)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        output = work / f"out-{rows}"
        ours, ours_mem = _timed_pipeline(data, output)
        two_workers = ("--direct_num_workers", "2", "--direct_running_mode", "multi_processing")
        ours_2, _ = _timed_pipeline(data, work / "out-2-workers", *two_workers)
        shutil.rmtree(work / "out-2-workers", ignore_errors=True)
        stats = json.loads((output / "stats.json").read_text())
        ids = sum(s["ids"] for s in stats["sequences"].values())
        ids = int(ids / max(stats["rows"]["train"], 1) * rows)
        floor(str(data))  # the first call pays pyarrow's one-off initialisation
        fl = floor(str(data))
        run = {
            "rows": rows,
            "ids": ids,
            "ours_s": ours,
            "ours_peak_mib": ours_mem,
            "ours_rows_per_s": rows / ours,
            "ours_ids_per_s": ids / ours,
            "floor_s": fl["seconds"],
            "floor_rows_per_s": rows / fl["seconds"],
            "ours_fraction_of_floor": fl["seconds"] / ours,
            "ours_2_workers_s": ours_2,
        }
        if not args.skip_baseline:
            base, base_mem = _timed(
                [
                    python,
                    "-m",
                    "benchmarks.baseline_pipeline",
                    "--input",
                    str(data),
                    "--output",
                    str(work / "base"),
                ]
            )
            run.update(
                {
                    "baseline_s": base,
                    "baseline_peak_mib": base_mem,
                    "baseline_rows_per_s": rows / base,
                    "speedup_vs_baseline": base / ours,
                    "speedup_2_workers_vs_baseline": base / ours_2,
                }
            )
            shutil.rmtree(work / "base", ignore_errors=True)
        plan = json.loads(
            subprocess.run(
                [
                    python,
                    "-c",
                    "import json,sys; from embedding.planner import plan_pipeline_output; "
                    "print(json.dumps(plan_pipeline_output(sys.argv[1]).to_dict()))",
                    str(output),
                ],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        run["padding"] = {
            name: {
                k: f[k]
                for k in (
                    "max_sequence_length",
                    "padding_efficiency",
                    "dropped_id_fraction",
                    "longest",
                    "longest_padding_efficiency",
                )
            }
            for name, f in plan["features"].items()
            if f["type"] == "sequence"
        }
        if rows == row_counts[-1]:
            run["trainer_examples_per_s"] = trainer_rates(str(output))
        results["runs"].append(run)
        print(json.dumps(run, indent=1), flush=True)
    results["scaling"] = [
        {
            "from_rows": a["rows"],
            "to_rows": b["rows"],
            "rows_ratio": b["rows"] / a["rows"],
            "time_ratio": b["ours_s"] / a["ours_s"],
            "peak_memory_ratio": b["ours_peak_mib"] / a["ours_peak_mib"],
        }
        for a, b in zip(results["runs"], results["runs"][1:], strict=False)
    ]
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    shutil.rmtree(work, ignore_errors=True)


def print_table(results: dict) -> None:
    print(f"\nMachine: {results['machine']}")
    print(
        f"{'rows':>9} {'ours s':>8} {'rows/s':>8} {'base s':>8} {'x base':>7} "
        f"{'2 wk s':>7} {'x base':>7} {'floor s':>8} {'of floor':>9} {'peak MiB':>9}"
    )
    nan = float("nan")
    for r in results["runs"]:
        print(
            f"{r['rows']:>9,} {r['ours_s']:>8.1f} {r['ours_rows_per_s']:>8.0f} "
            f"{r.get('baseline_s', nan):>8.1f} {r.get('speedup_vs_baseline', nan):>7.2f} "
            f"{r['ours_2_workers_s']:>7.1f} {r.get('speedup_2_workers_vs_baseline', nan):>7.2f} "
            f"{r['floor_s']:>8.2f} {r['ours_fraction_of_floor']:>9.3f} "
            f"{r['ours_peak_mib']:>9.0f}"
        )
    for s in results.get("scaling", []):
        print(
            f"Scaling {s['from_rows']:,} -> {s['to_rows']:,} rows (x{s['rows_ratio']:.0f}): "
            f"time x{s['time_ratio']:.2f}, peak memory x{s['peak_memory_ratio']:.2f}"
        )
    last = results["runs"][-1]
    if "trainer_examples_per_s" in last:
        t = last["trainer_examples_per_s"]
        files, memory = t["train_from_files"], t["train_in_memory"]
        runs = ", ".join(f"{r:.2f}" for r in t["files_over_memory_runs"])
        print(
            f"Trainer examples/s (medians of {ROUNDS}): from files {files:.0f}, in memory "
            f"{memory:.0f} (files/memory {files / memory:.2f}; pairs: {runs}), input_fn alone "
            f"{t['input_fn_alone']:.0f} ({t['input_fn_alone'] / files:.1f}x training)"
        )
    for name, p in last["padding"].items():
        print(
            f"Padding {name}: L={p['max_sequence_length']} efficiency "
            f"{p['padding_efficiency']:.1%} ids dropped {p['dropped_id_fraction']:.1%}; "
            f"L=longest={p['longest']} efficiency {p['longest_padding_efficiency']:.2%}"
        )


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
