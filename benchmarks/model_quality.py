"""Model quality against counting and against a tuned linear model, per data set and seed.

Generates each data set (`examples.clicks.generate`), runs the pipeline and the planner once
per data set and seed, then trains the model at each `--steps` (from scratch, batch 256) and
prints its eval AUC next to two references measured on the same split:

- popularity: the best single-feature baseline the trainer itself measures
  (`best_baseline_auc` in eval_metrics.json; on the ratings data, the item's smoothed rate);
- a one-hot logistic regression over user_id and item_id (scikit-learn), its inverse
  regularization C chosen on the validation split, never on eval. It reads the pipeline's
  transformed TFRecords, so it sees exactly the rows and ids the model sees.

Data sets: `ratings-user` (the ratings variant split by user: every eval user is unseen),
`ratings-row` (the same rows split by rating: eval users are seen in training), `clicks` (the
example data; no user_id column in its config, so no logistic regression), and the click
log's `item-bias` and `long-tail` label models.

    python -m benchmarks.model_quality                                 # ratings, 3 seeds
    python -m benchmarks.model_quality --datasets clicks --seeds 42 --steps 3000
    python -m benchmarks.model_quality --variants default no-user-term

Results go to RUN_DIR/model_quality.json (default runs/model_quality/); runs of other data
sets, seeds or variants already there are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence

CLICKS = "examples/clicks/features.toml"
# name -> (generator flags, config). The ratings split by user and by rating share one CSV.
DATASETS = {
    "ratings-user": (["--variant", "ratings"], "examples/clicks/ratings.toml"),
    "ratings-row": (["--variant", "ratings"], "examples/clicks/ratings_by_rating.toml"),
    "clicks": (["--rows", "50000"], CLICKS),
    "item-bias": (["--rows", "50000", "--label-model", "item-bias"], CLICKS),
    "long-tail": (["--rows", "50000", "--label-model", "item-bias", "--items", "200000"], CLICKS),
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
    "no-bias-init": ["--no-bias-init"],
    "no-key-term": ["--no-key-term"],
    "history-dropout-0.5": ["--history-dropout", "0.5"],
}
LR_FEATURES = ("user_id", "item_id")
LR_C = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def _run(command: list[str], log: str) -> None:
    with open(log, "w") as f:
        done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}; see {log}")


def prepare(run_dir: str, dataset: str, seed: int) -> str:
    """Generates the data set and runs the pipeline and the planner; returns OUTPUT."""
    flags, config = DATASETS[dataset]
    base = os.path.join(run_dir, f"{dataset}-{seed}")
    output = os.path.join(base, "pipeline")
    if os.path.exists(os.path.join(output, "_SUCCESS")):
        # The plan is made again: the planner's code may have changed since.
        _run(
            [sys.executable, "-m", "embedding", "--pipeline-output", output],
            os.path.join(base, "plan.log"),
        )
        return output
    os.makedirs(base, exist_ok=True)
    data = os.path.join(base, "data.csv")
    py = sys.executable
    _run(
        [py, "-m", "examples.clicks.generate", "--seed", str(seed), "--output", data, *flags],
        os.path.join(base, "generate.log"),
    )
    # The pipeline runs in its own environment, as a user runs it (README).
    pipeline_py = os.environ.get("PIPELINE_PYTHON") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venvs/pipeline/bin/python"
    )
    _run(
        [pipeline_py, "-m", "pipeline", "--config", config, "--input", data, "--output", output,
         "--overwrite"],
        os.path.join(base, "pipeline.log"),
    )  # fmt: skip
    _run([py, "-m", "embedding", "--pipeline-output", output], os.path.join(base, "plan.log"))
    return output


def train(output: str, model_dir: str, flags: list[str], steps: int, seed: int) -> dict:
    """Trains one variant from scratch; returns its eval_metrics.json and the time taken."""
    subprocess.run(["rm", "-rf", model_dir], check=True)
    started = time.time()
    _run(
        [sys.executable, "-m", "trainer.task", "--pipeline-output", output, "--model-dir",
         model_dir, "--train-steps", str(steps), "--batch-size", "256", "--no-export",
         "--seed", str(seed), *flags],
        model_dir + ".log",
    )  # fmt: skip
    with open(os.path.join(model_dir, "eval_metrics.json")) as f:
        metrics = json.load(f)
    metrics["seconds"] = time.time() - started
    return metrics


def _read_ids(output: str, split: str, features: Sequence[str]):
    """(ids per feature, labels) of one split of the pipeline's transformed TFRecords."""
    import numpy as np
    import tensorflow as tf

    from common import artifacts
    from common.plan import EmbeddingPlan

    manifest = artifacts.require_complete(output)
    if not manifest.data.get(split):
        return None
    label = EmbeddingPlan.from_dict(artifacts.read_json(output, artifacts.PLAN)).label["name"]
    spec = {n: tf.io.VarLenFeature(tf.int64) for n in features}
    spec[label] = tf.io.FixedLenFeature([], tf.float32)
    ids = {n: [] for n in features}
    labels = []
    dataset = tf.data.TFRecordDataset(manifest.data_files(split), compression_type="GZIP")
    for batch in dataset.batch(4096).map(lambda s: tf.io.parse_example(s, spec)):
        for n in features:
            dense = tf.sparse.to_dense(batch[n], default_value=-1).numpy()
            ids[n].append(dense[:, 0] if dense.shape[1] else np.full(len(dense), -1))
        labels.append(batch[label].numpy())
    if not labels:
        return None
    return {n: np.concatenate(v) for n, v in ids.items()}, np.concatenate(labels)


def logistic_regression(output: str) -> dict | None:
    """Eval AUC of a one-hot user_id + item_id logistic regression fitted on train, its C
    chosen by validation AUC; None without those columns or a validation split."""
    import numpy as np
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from common.config import read_pipeline_config

    columns = {f.name for f in read_pipeline_config(output).features}
    if not set(LR_FEATURES) <= columns:
        return None
    splits = {}
    for split in ("train", "validation", "eval"):
        splits[split] = _read_ids(output, split, LR_FEATURES)
        if splits[split] is None:
            return None
    sizes = {n: 2 + max(int(ids[n].max()) for ids, _ in splits.values()) for n in LR_FEATURES}
    offsets = np.cumsum([0] + [sizes[n] for n in LR_FEATURES])

    def one_hot(ids):
        rows = len(ids[LR_FEATURES[0]])
        cols = np.stack(
            [np.where(ids[n] < 0, sizes[n] - 1, ids[n]) + offsets[i] for i, n in
             enumerate(LR_FEATURES)], axis=1)  # fmt: skip
        data = np.ones(cols.size)
        return sp.csr_matrix(
            (data, (np.repeat(np.arange(rows), len(LR_FEATURES)), cols.ravel())),
            shape=(rows, int(offsets[-1])),
        )

    x = {s: one_hot(ids) for s, (ids, _) in splits.items()}
    y = {s: labels for s, (_, labels) in splits.items()}
    scores = {}
    for c in LR_C:
        model = LogisticRegression(C=c, max_iter=2000).fit(x["train"], y["train"])
        scores[c] = roc_auc_score(y["validation"], model.decision_function(x["validation"]))
    best = max(scores, key=scores.get)
    model = LogisticRegression(C=best, max_iter=2000).fit(x["train"], y["train"])
    return {
        "lr_auc": float(roc_auc_score(y["eval"], model.decision_function(x["eval"]))),
        "lr_c": best,
        "lr_validation_auc": float(scores[best]),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/model_quality")
    parser.add_argument("--steps", type=int, nargs="+", default=[250, 3000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument(
        "--datasets", nargs="+", choices=DATASETS, default=["ratings-user", "ratings-row"]
    )
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["default"])
    parser.add_argument(
        "--flags", default="", help="extra trainer flags for every run (space separated)"
    )
    parser.add_argument("--tag", default="", help="a name for this code or flag set")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    path = os.path.join(args.run_dir, "model_quality.json")
    results: list[dict] = []
    if os.path.exists(path):
        with open(path) as f:
            results = json.load(f)["results"]
    os.makedirs(args.run_dir, exist_ok=True)
    print(
        f"{'data set':13s} {'seed':>4s} {'variant':18s} {'steps':>5s} {'model':>7s} "
        f"{'popular':>7s} {'LR':>7s} {'-pop':>7s} {'-LR':>7s}  seconds",
        flush=True,
    )
    for dataset in args.datasets:
        for seed in args.seeds:
            output = prepare(args.run_dir, dataset, seed)
            reference_path = os.path.join(output, "..", "logistic_regression.json")
            if os.path.exists(reference_path):
                with open(reference_path) as f:
                    reference = json.load(f)
            else:
                reference = logistic_regression(output) or {}
                with open(reference_path, "w") as f:
                    json.dump(reference, f)
            for variant in args.variants:
                flags = VARIANTS[variant] + args.flags.split()
                for steps in args.steps:
                    model_dir = os.path.join(
                        args.run_dir, f"{dataset}-{seed}", f"model-{args.tag}{variant}-{steps}"
                    )
                    m = train(output, model_dir, flags, steps, seed)
                    row = {
                        "dataset": dataset, "seed": seed, "variant": variant, "tag": args.tag,
                        "flags": flags, "steps": steps, "auc": m["auc"],
                        "best_baseline": m.get("best_baseline"),
                        "popularity_auc": m.get("baseline_auc_item_id", m.get("best_baseline_auc")),
                        "best_baseline_auc": m.get("best_baseline_auc"),
                        "lr_auc": reference.get("lr_auc"), "lr_c": reference.get("lr_c"),
                        "seconds": round(m["seconds"], 1),
                    }  # fmt: skip
                    for key in ("beats_baseline", "validation_auc", "best"):
                        if key in m:
                            row[key] = m[key]
                    results.append(row)
                    lr = row["lr_auc"]
                    print(
                        f"{dataset:13s} {seed:4d} {args.tag + variant:18s} {steps:5d} "
                        f"{row['auc']:7.4f} {row['popularity_auc']:7.4f} "
                        f"{lr if lr is not None else float('nan'):7.4f} "
                        f"{row['auc'] - row['popularity_auc']:+7.4f} "
                        f"{row['auc'] - lr if lr is not None else float('nan'):+7.4f}  "
                        f"{row['seconds']:.0f}",
                        flush=True,
                    )
                    with open(path, "w") as f:
                        json.dump({"batch_size": 256, "results": results}, f, indent=1)
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
