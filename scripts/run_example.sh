#!/usr/bin/env bash
# The whole chain on generated example data: set up, generate, measure, plan, train, evaluate,
# export. Outputs go under runs/example/ (override with RUN_DIR=...). The pipeline runs in the
# pipeline environment (.venvs/pipeline/), the planner and the trainer in the trainer's (.venv/);
# they meet through the files under RUN_DIR.
#   ROWS=50000 TRAIN_STEPS=3000 BATCH_SIZE=256 bash scripts/run_example.sh
# VERBOSE=1 passes -v to each command: the libraries' logs are shown too.
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS="${ROWS:-50000}"
TRAIN_STEPS="${TRAIN_STEPS:-3000}"
BATCH_SIZE="${BATCH_SIZE:-256}"
RUN_DIR="${RUN_DIR:-runs/example}"
DATA="$RUN_DIR/clicks.csv"
OUTPUT="$RUN_DIR/pipeline"
MODEL="$RUN_DIR/model"
V=()
if [ -n "${VERBOSE:-}" ] && [ "${VERBOSE}" != 0 ]; then V=(-v); fi

bash scripts/setup.sh
PIPELINE_PY=.venvs/pipeline/bin/python
PY=.venv/bin/python
started=$SECONDS

echo; echo "== 1/4 Generating $ROWS example rows -> $DATA"
$PIPELINE_PY -m examples.clicks.generate --rows "$ROWS" --output "$DATA"

echo; echo "== 2/4 Pipeline: vocabularies, statistics, transformed TFRecords -> $OUTPUT"
$PIPELINE_PY -m pipeline --config examples/clicks/features.toml --input "$DATA" --output "$OUTPUT" \
  --overwrite "${V[@]}" > "$RUN_DIR/pipeline.json"

echo; echo "== 3/4 Embedding plan"
$PY -m embedding --pipeline-output "$OUTPUT" "${V[@]}" > "$RUN_DIR/plan.txt"
sed -n '/^Tables/,/^TPU capacity/{/^TPU capacity/!p}' "$RUN_DIR/plan.txt"
echo "(the whole plan: $RUN_DIR/plan.txt)"

echo; echo "== 4/4 Training $TRAIN_STEPS steps at batch $BATCH_SIZE (TPUEstimator on CPU) -> $MODEL"
rm -rf "$MODEL"
$PY -m trainer.task --pipeline-output "$OUTPUT" --model-dir "$MODEL" \
  --train-steps "$TRAIN_STEPS" --batch-size "$BATCH_SIZE" "${V[@]}" > "$RUN_DIR/metrics.json"

$PY - "$MODEL" "$OUTPUT" "$DATA" "$RUN_DIR" "$((SECONDS - started))" <<'PY'
import glob, json, sys
model, output, data, run_dir, seconds = sys.argv[1:]
metrics = json.load(open(f"{model}/eval_metrics.json"))
rows = json.load(open(f"{output}/stats.json"))["rows"]
exports = sorted(glob.glob(f"{model}/export/*"))
print()
auc = "undefined" if metrics.get("auc") is None else f"{metrics['auc']:.4f}"
print(f"Eval AUC {auc}  (loss {metrics['loss']:.4f}, "
      f"accuracy {metrics['accuracy']:.4f}, step {metrics['global_step']}, "
      f"{metrics['examples']} examples of held-out users)")
if metrics.get("auc") is not None and metrics.get("best_baseline_auc") is not None:
    margin = metrics["auc"] - metrics["best_baseline_auc"]
    print(f"Best single-feature baseline: {metrics['best_baseline']} "
          f"AUC {metrics['best_baseline_auc']:.4f} (model {margin:+.4f})")
print(f"Rows: {rows['read']} read, {rows['train']} train, "
      f"{rows.get('validation', 0)} validation, {rows['eval']} eval, "
      f"{rows['rejected']} rejected")
print("Outputs:")
print(f"  raw data             {data}")
print(f"  statistics           {output}/stats.json")
print(f"  embedding plan       {output}/embedding_plan.json")
print(f"  transformed data     {output}/data/")
print(f"  transform graph      {output}/transform_fn/")
print(f"  rejected rows        {output}/rejected/")
print(f"  checkpoints          {model}/")
print(f"  eval metrics         {model}/eval_metrics.json")
print(f"  serving SavedModel   {exports[-1] if exports else '(none)'}")
print(f"  statistics for TFDV  {output}/statistics/train.pb, eval.pb; {output}/schema.pbtxt")
print(f"  report               {output}/report.html")
print(f"Done in {seconds} s (after setup).")
PY
