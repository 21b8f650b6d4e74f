"""`python -m embedding --pipeline-output OUTPUT`: print the plan, write embedding_plan.json.

With `--tpu-type v3-8` the plan also says whether the tables fit that slice; with `--fit` it
shrinks what the config allows (`shrinkable` vocabularies' top_k, "auto" dimensions) until they
do, and prints what that costs in vocabulary coverage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from common import artifacts, console
from embedding import capacity
from embedding.planner import PlanError, format_plan, plan_pipeline_output

DOES_NOT_FIT = 3
"""Exit status when the written plan does not fit --tpu-type."""


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
    parser.add_argument(
        "--tpu-type",
        default=None,
        help="the TPU slice to train on (v2-8, v3-8, v4-8, or a Pod slice such as v3-32): say "
        "whether the tables fit it (exit status 3 when they do not)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=capacity.DEFAULT_BATCH_SIZE,
        help="the global batch size the activations are sized for (default %(default)s)",
    )
    parser.add_argument(
        "--hbm-headroom",
        type=float,
        default=capacity.DEFAULT_HEADROOM,
        help="share of each TPU core's HBM kept for the dense model and XLA (default %(default)s)",
    )
    parser.add_argument(
        "--fit",
        action="store_true",
        help="shrink to fit --tpu-type: lower top_k of vocabularies marked `shrinkable = true` "
        '(printed as config changes, with the coverage they cost), then the "auto" dimensions',
    )
    console.add_flags(parser)
    args = parser.parse_args(argv)
    console.configure_logging(console.start(argv))
    if args.fit and not args.tpu_type:
        parser.error("--fit needs --tpu-type: the slice to fit the tables to")
    try:
        plan = plan_pipeline_output(
            args.pipeline_output,
            args.length_coverage,
            args.dimension,
            tpu_type=args.tpu_type,
            batch_size=args.batch_size,
            headroom=args.hbm_headroom,
            fit=args.fit,
        )
    except (PlanError, artifacts.PipelineOutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_plan(plan))
    print(f"\nWrote {artifacts.join(args.pipeline_output, artifacts.PLAN)}")
    target = plan.capacity.get("target")
    if target and not target["fits"]:
        print(
            f"\nThe tables do not fit {target['tpu_type']} as planned; the trainer will refuse "
            "it (see 'TPU capacity' above).",
            file=sys.stderr,
        )
        return DOES_NOT_FIT
    return 0
