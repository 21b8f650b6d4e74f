"""Benchmarks, each measured side by side in one run on the same generated data.

    python -m benchmarks.run                         # 10k, 100k, 1M rows and the long variant
    python -m benchmarks.run --rows 1000000          # one size; --skip-baseline to skip it

Run it with the pipeline environment's Python (the pipeline's ratios are measured there); the
trainer's rates need the trainer environment and are skipped where TPUEstimator is missing.

1. Pipeline throughput (rows/s, ids/s) of `python -m pipeline` against the census-style
   tf.Transform pipeline (`benchmarks/baseline_pipeline.py`), as a ratio; ours also with two
   DirectRunner worker processes unless --skip-two-workers. Also on a long-sequence
   variant (--long-rows rows of about 100 history ids each).
2. Where the time goes: the seconds and share of each stage of our run (benchmarks/stages.py:
   imports, graph construction and tracing, reading and decoding, measuring, tf.Transform's
   analysis, keeping the decoded rows between the passes, transforming, tf.Example
   encoding, the sink, the runner's own share, the commit).
3. The floor: the same analysis (the shared vocabulary, frequency thresholds, exact length
   histograms, moments) and id mapping in one process with pyarrow and numpy, writing
   nothing; our time as a multiple of it.
4. Fixed cost: the pipeline on 1,000 rows against `import tensorflow, tensorflow_transform,
   apache_beam` alone, whole processes, alternating, medians of three.
5. Scaling: wall time and peak memory (max RSS of the process tree) per row count.
6. Trainer: examples/s of TPUEstimator(use_tpu=False) fed from the TFRecords, against the
   same model fed from an in-memory cache of the same batches, and the input_fn alone.
7. Padding: padding efficiency and ids dropped at the planned L against L = the longest.

Prints a table and writes benchmarks/results.json. Machines are noisy: compare ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
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


def _timed_pipeline(
    data: Path, output: Path, *beam_args: str, stages: Path | None = None
) -> tuple[float, float]:
    """`python -m pipeline` on the example config: (seconds, peak RSS in MiB).

    With `stages`, the same run goes through `benchmarks.stages`, which writes there the
    seconds of each stage (measured inside the run; it adds no work)."""
    args = ["--config", str(CONFIG), "--input", str(data), "--output", str(output)]
    if stages is None:
        return _timed([sys.executable, "-m", "pipeline", *args, *beam_args])
    command = ["-m", "benchmarks.stages", "--report", str(stages), "--", *args, *beam_args]
    return _timed([sys.executable, *command])


def _stage_shares(report: dict, whole_s: float) -> dict:
    """Seconds and share of the whole process of each stage, the process's own start and
    exit (the interpreter, before the first import and after the run) included."""
    seconds = dict(report["seconds"])
    seconds["process start and exit"] = max(whole_s - report["in_process_s"], 0.0)
    return {name: {"s": s, "share": s / whole_s} for name, s in seconds.items()}


def _generate(data: Path, rows: int, history_median: float = 12.0) -> None:
    command = [sys.executable, "-m", "examples.clicks.generate", "--rows", str(rows)]
    command += ["--history-median", str(history_median), "--output", str(data)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)


def fixed_cost(work: Path, rounds: int = ROUNDS) -> dict:
    """Whole-process seconds of the pipeline on 1,000 rows against `import tensorflow,
    tensorflow_transform, apache_beam` alone in the same Python, alternating; medians."""
    data = work / "clicks-1000.csv"
    _generate(data, 1000)
    imports = [sys.executable, "-c", "import tensorflow, tensorflow_transform, apache_beam"]
    runs: dict[str, list[float]] = {"pipeline_1000_rows_s": [], "imports_s": []}
    for _ in range(rounds):
        runs["imports_s"].append(_timed(imports)[0])
        runs["pipeline_1000_rows_s"].append(_timed_pipeline(data, work / "out-1000")[0])
        shutil.rmtree(work / "out-1000", ignore_errors=True)
    result = {name: statistics.median(values) for name, values in runs.items()}
    result["above_imports_s"] = result["pipeline_1000_rows_s"] - result["imports_s"]
    result["runs"] = runs
    return result


def floor(csv_path: str) -> dict:
    """The same analysis and id mapping, vectorized in one process, writing nothing.

    Vocabularies (the shared `items` one counted over item_id and history), ordered by
    frequency, with region's frequency threshold; exact length histograms; the price's
    moments; then every value mapped to its id (out-of-vocabulary values to the OOV bucket)
    and the price z-scored.
    """
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
    empty = pc.equal(table["history"], "")
    # An empty cell splits into [""]: no token.
    history = pc.if_else(empty, pa.scalar([], pa.list_(pa.string())), history)
    tokens = pc.list_flatten(history)
    items = pa.chunked_array(tokens.chunks + table["item_id"].chunks)

    def vocabulary(values, threshold: int = 1) -> pa.Array:
        counts = pc.value_counts(values)
        ordered = pa.table({"v": counts.field("values"), "c": counts.field("counts")}).sort_by(
            [("c", "descending"), ("v", "descending")]
        )
        return ordered.filter(pc.greater_equal(ordered["c"], threshold))["v"].combine_chunks()

    def ids(values, vocab: pa.Array):
        return pc.fill_null(pc.index_in(values, value_set=vocab), len(vocab))

    vocab_items = vocabulary(items)
    mapped = {
        "item_id": ids(table["item_id"], vocab_items),
        "history_ids": ids(tokens, vocab_items),
        "device": ids(table["device"], vocabulary(table["device"])),
        "region": ids(table["region"], vocabulary(table["region"], threshold=3)),
    }
    lengths = np.bincount(pc.list_value_length(history).to_numpy(zero_copy_only=False))
    price = table["price"].to_numpy()
    mapped["price"] = (price - price.mean()) / price.std()
    seconds = time.perf_counter() - started
    del mapped
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


def _versions() -> dict:
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        **{
            name: version(name)
            for name in ("tensorflow", "tensorflow-transform", "apache-beam", "pyarrow")
        },
    }


def measure_size(args, work: Path, rows: int, history_median: float, name: str) -> dict:
    """One data size: ours (with its stages), two workers, the floor, the baseline."""
    data = work / f"{name}.csv"
    _generate(data, rows, history_median)
    output = work / f"out-{name}"
    stages_path = work / f"stages-{name}.json"
    ours, ours_mem = _timed_pipeline(data, output, stages=stages_path)
    stats = json.loads((output / "stats.json").read_text())
    ids = sum(s["ids"] for s in stats["sequences"].values())
    ids = int(ids / max(stats["rows"]["train"], 1) * rows)
    floor(str(data))  # the first call pays pyarrow's one-off initialisation
    fl = floor(str(data))
    run = {
        "data": name,
        "rows": rows,
        "ids": ids,
        "ours_s": ours,
        "ours_peak_mib": ours_mem,
        "ours_rows_per_s": rows / ours,
        "ours_ids_per_s": ids / ours,
        "stages": _stage_shares(json.loads(stages_path.read_text()), ours),
        "floor_s": fl["seconds"],
        "floor_rows_per_s": rows / fl["seconds"],
        "ours_over_floor": ours / fl["seconds"],
        "ours_fraction_of_floor": fl["seconds"] / ours,
    }
    if not args.skip_two_workers:
        two_workers = ("--direct_num_workers", "2", "--direct_running_mode", "multi_processing")
        ours_2, _ = _timed_pipeline(data, work / "out-2-workers", *two_workers)
        shutil.rmtree(work / "out-2-workers", ignore_errors=True)
        run["ours_2_workers_s"] = ours_2
    if not args.skip_baseline:
        base, base_mem = _timed(
            [
                sys.executable,
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
            }
        )
        if "ours_2_workers_s" in run:
            run["speedup_2_workers_vs_baseline"] = base / run["ours_2_workers_s"]
        shutil.rmtree(work / "base", ignore_errors=True)
    plan = json.loads(
        subprocess.run(
            [
                sys.executable,
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
        feature: {
            k: f[k]
            for k in (
                "max_sequence_length",
                "padding_efficiency",
                "dropped_id_fraction",
                "longest",
                "longest_padding_efficiency",
            )
        }
        for feature, f in plan["features"].items()
        if f["type"] == "sequence"
    }
    run["output"] = str(output)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rows",
        type=int,
        action="append",
        help="row counts to measure (default: 10000, 100000 and 1000000)",
    )
    parser.add_argument(
        "--long-rows",
        type=int,
        default=300_000,
        help="rows of the long-sequence variant (about 100 history ids a row); 0 skips it",
    )
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-two-workers", action="store_true")
    parser.add_argument("--skip-fixed-cost", action="store_true")
    parser.add_argument(
        "--skip-trainer",
        action="store_true",
        help="skip the trainer's rates (skipped anyway where TPUEstimator is not installed, "
        "as in the pipeline's environment)",
    )
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results.json"))
    args = parser.parse_args()
    row_counts = args.rows or [10_000, 100_000, 1_000_000]
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30}"
        " GiB",
        "load_average_at_start": os.getloadavg()[0],
        "versions": _versions(),
        "runs": [],
    }
    sizes = [(rows, 12.0, f"clicks-{rows}") for rows in row_counts]
    if args.long_rows:
        sizes.append((args.long_rows, 62.0, f"long-{args.long_rows}"))
    for rows, history_median, name in sizes:
        run = measure_size(args, work, rows, history_median, name)
        output = run.pop("output")
        trainer_wanted = not args.skip_trainer and name == f"clicks-{row_counts[-1]}"
        if trainer_wanted and importlib.util.find_spec("tensorflow_estimator"):
            run["trainer_examples_per_s"] = trainer_rates(output)
        shutil.rmtree(output, ignore_errors=True)
        results["runs"].append(run)
        print(json.dumps(run, indent=1), flush=True)
    if not args.skip_fixed_cost:
        results["fixed_cost"] = fixed_cost(work)
    plain = [r for r in results["runs"] if r["data"].startswith("clicks-")]
    results["scaling"] = [
        {
            "from_rows": a["rows"],
            "to_rows": b["rows"],
            "rows_ratio": b["rows"] / a["rows"],
            "time_ratio": b["ours_s"] / a["ours_s"],
            "peak_memory_ratio": b["ours_peak_mib"] / a["ours_peak_mib"],
        }
        for a, b in zip(plain, plain[1:], strict=False)
    ]
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    shutil.rmtree(work, ignore_errors=True)


def print_table(results: dict) -> None:
    print(f"\nMachine: {results['machine']}, {results['date']}, {results['versions']}")
    print(
        f"{'data':>14} {'rows':>9} {'ours s':>7} {'rows/s':>8} {'base s':>7} {'x base':>7} "
        f"{'2 wk s':>7} {'x base':>7} {'floor s':>8} {'x floor':>8} {'peak MiB':>9}"
    )
    nan = float("nan")
    for r in results["runs"]:
        print(
            f"{r['data']:>14} {r['rows']:>9,} {r['ours_s']:>7.1f} {r['ours_rows_per_s']:>8.0f} "
            f"{r.get('baseline_s', nan):>7.1f} {r.get('speedup_vs_baseline', nan):>7.2f} "
            f"{r.get('ours_2_workers_s', nan):>7.1f} "
            f"{r.get('speedup_2_workers_vs_baseline', nan):>7.2f} "
            f"{r['floor_s']:>8.2f} {r['ours_over_floor']:>8.1f} {r['ours_peak_mib']:>9.0f}"
        )
    for r in results["runs"]:
        print(f"\nWhere the time goes, {r['data']} ({r['ours_s']:.1f} s, whole process):")
        for name, stage in sorted(r["stages"].items(), key=lambda kv: -kv[1]["s"]):
            print(f"  {stage['s']:7.2f} s {stage['share']:6.1%}  {name}")
    if "fixed_cost" in results:
        f = results["fixed_cost"]
        print(
            f"\nFixed cost (medians of {ROUNDS}, whole processes): 1,000 rows "
            f"{f['pipeline_1000_rows_s']:.1f} s, imports alone {f['imports_s']:.1f} s, "
            f"{f['above_imports_s']:+.1f} s above them"
        )
    for s in results.get("scaling", []):
        print(
            f"Scaling {s['from_rows']:,} -> {s['to_rows']:,} rows (x{s['rows_ratio']:.0f}): "
            f"time x{s['time_ratio']:.2f}, peak memory x{s['peak_memory_ratio']:.2f}"
        )
    for r in results["runs"]:
        if "trainer_examples_per_s" in r:
            t = r["trainer_examples_per_s"]
            files, memory = t["train_from_files"], t["train_in_memory"]
            pairs = ", ".join(f"{x:.2f}" for x in t["files_over_memory_runs"])
            print(
                f"Trainer examples/s (medians of {ROUNDS}): from files {files:.0f}, in memory "
                f"{memory:.0f} (files/memory {files / memory:.2f}; pairs: {pairs}), input_fn "
                f"alone {t['input_fn_alone']:.0f} ({t['input_fn_alone'] / files:.1f}x training)"
            )
        for name, p in r["padding"].items():
            print(
                f"Padding {name} ({r['data']}): L={p['max_sequence_length']} efficiency "
                f"{p['padding_efficiency']:.1%} ids dropped {p['dropped_id_fraction']:.1%}; "
                f"L=longest={p['longest']} efficiency {p['longest_padding_efficiency']:.2%}"
            )


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
