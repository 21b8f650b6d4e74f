"""The TPU capacity plan of a catalogue far larger than the example data.

Takes a finished pipeline output of the example (its measured stats and config), grows the
`items` vocabulary to `--items` values and prints what the planner would print for it. The
coverage curve of the grown vocabulary is computed, not measured: item popularity follows the
example generator's law (probability ~ 1 / rank ** 1.05, `examples/clicks/generate.py`).

    python -m benchmarks.capacity_catalogue --pipeline-output runs/clicks --items 100000000
    python -m benchmarks.capacity_catalogue --pipeline-output runs/clicks --items 100000000 \\
        --tpu-type v3-8 --fit --shrinkable items

Writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from common import artifacts
from common.config import read_pipeline_config
from embedding import capacity
from embedding.planner import add_capacity, format_capacity, make_plan

ZIPF_EXPONENT = 1.05
"""The popularity law of examples/clicks/generate.py."""


def zipf_coverage(values: int, exponent: float = ZIPF_EXPONENT) -> dict[str, float]:
    """Share of tokens the top k values cover, at powers of two and at `values`."""
    points = [2**i for i in range(int(math.log2(values)) + 1)] + [values]
    total, covered, start, chunk = 0.0, {}, 1, 10_000_000
    wanted = iter(sorted(set(points)))
    k = next(wanted)
    while start <= values:
        stop = min(start + chunk, values + 1)
        partial = np.cumsum(1.0 / np.arange(start, stop, dtype=np.float64) ** exponent) + total
        while k is not None and k < stop:
            covered[k] = partial[k - start]
            k = next(wanted, None)
        total = partial[-1]
        start = stop
    return {str(n): float(c / total) for n, c in covered.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity_catalogue")
    parser.add_argument("--pipeline-output", required=True, help="an example pipeline OUTPUT")
    parser.add_argument("--items", type=int, default=100_000_000, help="catalogue size")
    parser.add_argument("--dimension", type=int, default=None, help="one dimension for all")
    parser.add_argument("--tpu-type", default=None)
    parser.add_argument("--batch-size", type=int, default=capacity.DEFAULT_BATCH_SIZE)
    parser.add_argument("--fit", action="store_true")
    parser.add_argument("--shrinkable", nargs="*", default=[], help="vocabularies that may shrink")
    args = parser.parse_args(argv)

    artifacts.require_complete(args.pipeline_output)
    stats = artifacts.read_json(args.pipeline_output, artifacts.STATS)
    config = read_pipeline_config(args.pipeline_output)
    items = stats["vocabularies"]["items"]
    # Every value kept: no token out of the vocabulary.
    items.update(
        size=args.items,
        distinct_values=args.items,
        coverage=zipf_coverage(args.items),
        oov_rate=0.0,
    )
    overrides = dict(config.vocabulary_overrides)
    for name in args.shrinkable:
        overrides[name] = dataclasses.replace(config.vocabulary_config(name), shrinkable=True)
    config = dataclasses.replace(config, vocabulary_overrides=overrides)

    plan = make_plan(stats, config, dimension=args.dimension)
    plan = add_capacity(plan, stats, config, args.tpu_type, args.batch_size, fit=args.fit)
    print("\n".join(format_capacity(plan.capacity)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
