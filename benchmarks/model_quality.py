"""Model quality against the single-feature baselines, per model variant and data set.

Generates the example click log in each label model (`examples.clicks.generate
--label-model`), runs the pipeline and the planner once per data set, then trains every
variant (a list of trainer flags) at the README's default steps and batch and prints, per
data set, the eval AUC of each variant, the best single-feature baseline and the margin.
The split key is user_id, so every eval user is unseen in training.

    python -m benchmarks.model_quality                       # every variant, both data sets
    python -m benchmarks.model_quality --variants default no-bias --steps 3000

Results go to RUN_DIR/model_quality.json (default runs/model_quality/).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence

# name -> generator flags. The long tail has ten times the items: many eval items are unseen
# in training, which measures the OOV row (auc_unseen_item_id).
DATASETS = {
    "topic": ["--label-model", "topic"],
    "item-bias": ["--label-model", "item-bias"],
    "long-tail": ["--label-model", "item-bias", "--items", "200000"],
}
# name -> trainer flags; "default" is the model as shipped, each other one changes one thing.
VARIANTS = {
    "default": [],
    "no-bias": ["--no-id-bias"],
    "bias-unscaled": ["--id-bias-scale", "1"],
    "embedding-rate-0.2": ["--embedding-learning-rate", "0.2"],
    "no-oov-training": ["--oov-train-share", "0"],
    "attention": ["--history-attention"],
    "no-cross": ["--cross-layers", "0"],
    "embedding-l2": ["--embedding-l2", "0.001"],
    "no-bias-decay": ["--no-id-bias-decay"],
}


def _run(command: list[str], log: str) -> None:
    with open(log, "w") as f:
        done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}; see {log}")


def prepare(run_dir: str, dataset: str, rows: int) -> str:
    """Generates the data set and runs the pipeline and the planner; returns OUTPUT."""
    base = os.path.join(run_dir, dataset)
    output = os.path.join(base, "pipeline")
    if os.path.exists(os.path.join(output, "_SUCCESS")):
        return output
    os.makedirs(base, exist_ok=True)
    data = os.path.join(base, "clicks.csv")
    py = sys.executable
    _run(
        [py, "-m", "examples.clicks.generate", "--rows", str(rows), "--output", data,
         *DATASETS[dataset]],
        os.path.join(base, "generate.log"),
    )  # fmt: skip
    _run(
        [py, "-m", "pipeline", "--config", "examples/clicks/features.toml", "--input", data,
         "--output", output, "--overwrite"],
        os.path.join(base, "pipeline.log"),
    )  # fmt: skip
    _run([py, "-m", "embedding", "--pipeline-output", output], os.path.join(base, "plan.log"))
    return output


def train(output: str, model_dir: str, flags: list[str], steps: int, batch: int) -> dict:
    """Trains one variant from scratch; returns its eval_metrics.json."""
    subprocess.run(["rm", "-rf", model_dir], check=True)
    _run(
        [sys.executable, "-m", "trainer.task", "--pipeline-output", output, "--model-dir",
         model_dir, "--train-steps", str(steps), "--batch-size", str(batch), "--no-export",
         *flags],
        model_dir + ".log",
    )  # fmt: skip
    with open(os.path.join(model_dir, "eval_metrics.json")) as f:
        return json.load(f)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/model_quality")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=["topic", "item-bias"])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    path = os.path.join(args.run_dir, "model_quality.json")
    results: dict[str, dict] = {}
    if os.path.exists(path):  # runs of other data sets or variants are kept
        with open(path) as f:
            results = json.load(f)["results"]
    for dataset in args.datasets:
        output = prepare(args.run_dir, dataset, args.rows)
        for variant in args.variants:
            model_dir = os.path.join(args.run_dir, dataset, f"model-{variant}")
            m = train(output, model_dir, VARIANTS[variant], args.steps, args.batch_size)
            results.setdefault(dataset, {})[variant] = {
                "auc": m["auc"],
                "best_baseline": m["best_baseline"],
                "best_baseline_auc": m["best_baseline_auc"],
                "margin": m["auc"] - m["best_baseline_auc"],
                "auc_unseen_item_id": m.get("auc_unseen_item_id"),
                "examples_unseen_item_id": m.get("examples_unseen_item_id"),
            }
            print(
                f"{dataset:10s} {variant:18s} AUC {m['auc']:.4f}  best baseline "
                f"{m['best_baseline']} {m['best_baseline_auc']:.4f}  margin "
                f"{m['auc'] - m['best_baseline_auc']:+.4f}  unseen items "
                f"{m.get('examples_unseen_item_id')} AUC {m.get('auc_unseen_item_id')}",
                flush=True,
            )
    with open(path, "w") as f:
        json.dump({"steps": args.steps, "batch_size": args.batch_size, "results": results}, f,
                  indent=2)  # fmt: skip
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
