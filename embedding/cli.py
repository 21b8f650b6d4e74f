"""`python -m embedding --pipeline-output OUTPUT`: print the plan, write embedding_plan.json."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from common import artifacts
from embedding.planner import PlanError, format_plan, plan_pipeline_output


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m embedding",
        description=(
            "Decide the embedding tables, dimensions and max_sequence_lengths from what the "
            "pipeline measured; print the plan and write OUTPUT/embedding_plan.json."
        ),
    )
    parser.add_argument("--pipeline-output", required=True, help="the pipeline's OUTPUT")
    parser.add_argument(
        "--length-coverage",
        type=float,
        default=None,
        help="share of sequences max_sequence_length must cover (overrides the config)",
    )
    parser.add_argument("--dimension", type=int, default=None, help="one dimension for every table")
    args = parser.parse_args(argv)
    try:
        plan = plan_pipeline_output(args.pipeline_output, args.length_coverage, args.dimension)
    except (PlanError, artifacts.PipelineOutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_plan(plan))
    print(f"\nWrote {artifacts.join(args.pipeline_output, artifacts.PLAN)}")
    return 0
