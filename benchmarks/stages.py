"""Where a pipeline run's time goes, stage by stage, measured inside the run.

    python -m benchmarks.stages --report stages.json -- --config C --input I --output O

Runs `python -m pipeline` in this process and writes, as JSON, the seconds of each stage:
the imports, the checks before the graph, building the graph (tf.Transform traces the
`preprocessing_fn` here), the Beam steps grouped by stage, the runner's own share of the
Beam run (translating the job, fusing stages, setting up bundles, moving elements between
stages), the summary and the commit. The Beam steps' seconds are Beam's own execution-time
counters (`ptransform_execution_time`, sampled by its state sampler, exclusive of the steps
downstream), so they add up to at most the Beam run.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402

EXECUTION_TIME = "metric:ptransform_execution_time:total_msecs:v1"
SINKS = ("WriteTrain/", "WriteValidation/", "WriteEval/")

STAGES = (
    "imports",
    "checks before the graph",
    "graph construction and tracing the preprocessing_fn",
    "reading and decoding",
    "measuring",
    "vocabulary files",
    "transform graph (tracing, writing)",
    "decoded rows kept between the passes (Arrow IPC: write, read back)",
    "transforming",
    "tf.Example encoding",
    "sink: sorted runs",
    "sink: merge, frame, gzip",
    "sink: other",
    "Beam runner (translation, fusion, bundle set-up, data plane)",
    "summary (stats, report)",
    "commit",
)


def stage_of(step: str) -> str:
    """The stage a Beam step of pipeline/graph.py belongs to, by its label."""
    top = step.split("/", 1)[0]
    if top.startswith("Spill"):
        return "decoded rows kept between the passes (Arrow IPC: write, read back)"
    if top in ("ReadRaw", "Decode"):
        return "reading and decoding"
    if top == "WriteTransformGraph":
        return "transform graph (tracing, writing)"
    if top.startswith(("Select[", "Vocabulary[", "Name[", "Vocabularies[")):
        return "vocabulary files"
    if top.startswith("Transform"):
        return "transforming"
    if top.startswith("Encode"):
        return "tf.Example encoding"
    if step.startswith(SINKS):
        if "/SortRuns" in step:
            return "sink: sorted runs"
        if "/MergeShards" in step:
            return "sink: merge, frame, gzip"
        return "sink: other"
    return "measuring"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report", required=True, help="where the JSON goes")
    parser.add_argument("pipeline_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    pipeline_args = [a for a in args.pipeline_args if a != "--"]

    from common import console, environments

    # As `python -m pipeline` does, before Beam and TensorFlow are imported.
    environments.require(environments.PIPELINE, "python -m benchmarks.stages")
    console.start()

    import apache_beam as beam
    import tensorflow  # noqa: F401
    import tensorflow_transform  # noqa: F401

    from pipeline import commit
    from pipeline import run as pipeline_run

    seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    marks: dict[str, float] = {}
    results = []

    def timed(function, name):
        def wrapper(*a, **k):
            marks[f"{name}_start"] = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                marks[f"{name}_end"] = time.perf_counter()

        return wrapper

    original_run = beam.Pipeline.run

    def run_and_keep(self, *a, **k):
        result = original_run(self, *a, **k)
        results.append(result)
        return result

    beam.Pipeline.run = timed(run_and_keep, "beam")
    pipeline_run.build = timed(pipeline_run.build, "graph")
    commit.commit = timed(commit.commit, "commit")
    started = time.perf_counter()
    seconds["imports"] = started - _STARTED
    if pipeline_run.main(pipeline_args):
        raise SystemExit(f"the pipeline failed: {' '.join(pipeline_args)}")
    ended = time.perf_counter()

    steps: dict[str, float] = {}
    for counter in results[0].monitoring_metrics().query()["counters"]:
        if counter.key.metric.name == EXECUTION_TIME and counter.key.step:
            steps[counter.key.step] = steps.get(counter.key.step, 0.0) + counter.committed / 1e3
    for step, s in steps.items():
        seconds[stage_of(step)] += s
    beam_run = marks["beam_end"] - marks["beam_start"]
    seconds["checks before the graph"] = marks["graph_start"] - started
    seconds["graph construction and tracing the preprocessing_fn"] = (
        marks["graph_end"] - marks["graph_start"]
    )
    seconds["Beam runner (translation, fusion, bundle set-up, data plane)"] = beam_run - sum(
        steps.values()
    )
    seconds["summary (stats, report)"] = marks["commit_start"] - marks["beam_end"]
    seconds["commit"] = marks["commit_end"] - marks["commit_start"]
    report = {
        "seconds": seconds,
        "in_process_s": ended - _STARTED,
        "top_steps": dict(sorted(steps.items(), key=lambda kv: -kv[1])[:15]),
    }
    with open(args.report, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    from common import process

    # Ends as `python -m pipeline` does (common.process.run_main): without the interpreter's
    # shutdown, which would add a second to the whole process timed here.
    process.run_main(lambda: main() or 0)
