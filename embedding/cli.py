"""`python -m embedding --pipeline-output OUTPUT`: print the plan, write embedding_plan.json."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from embedding.planner import EmbeddingPlan, PlanError, format_plan, make_plan
from pipeline import artifacts
from pipeline.config import read_pipeline_config


def plan_pipeline_output(
    pipeline_output: str,
    length_coverage: float | None = None,
    dimension: int | None = None,
) -> EmbeddingPlan:
    """Plans from a finished pipeline output and writes OUTPUT/embedding_plan.json."""
    artifacts.require_complete(pipeline_output)
    stats = artifacts.read_json(pipeline_output, artifacts.STATS)
    config = read_pipeline_config(pipeline_output)
    plan = make_plan(stats, config, length_coverage=length_coverage, dimension=dimension)
    artifacts.write_json(pipeline_output, artifacts.PLAN, plan.to_dict())
    return plan


def load_or_make_plan(pipeline_output: str) -> EmbeddingPlan:
    """The plan written by `python -m embedding`, or a fresh default plan if there is none."""
    artifacts.require_complete(pipeline_output)
    if artifacts.exists(artifacts.join(pipeline_output, artifacts.PLAN)):
        return EmbeddingPlan.from_dict(artifacts.read_json(pipeline_output, artifacts.PLAN))
    return plan_pipeline_output(pipeline_output)


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
