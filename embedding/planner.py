"""Measured statistics + config -> the embedding plan. Pure Python: no TensorFlow.

The plan decides, from what the pipeline measured:
- one table per vocabulary, sized as vocabulary entries plus OOV buckets;
- each sequence feature's `max_sequence_length`, the smallest L that covers
  `sequence.length_coverage` of the training sequences (an explicit per-feature value wins);
- each table's dimension (`"auto"`: see `auto_dimension`);
- which columns are dropped, and why.

The plan is written as `embedding_plan.json`; the TPU columns and the trainer are built from
it, never from numbers typed by hand.
"""

from __future__ import annotations

from typing import Any

from common import artifacts, statistics
from common.config import Config, read_pipeline_config
from common.plan import EmbeddingPlan, FeaturePlan, TablePlan, read_plan, write_plan

ID_LIKE_RATIO = 0.5
"""A categorical whose distinct values reach this share of its rows is flagged as id-like."""

SHARING_OVERLAP = 0.5
"""Two vocabularies sharing this share of the smaller one's values are suggested for sharing."""


def auto_dimension(buckets: int) -> int:
    """The embedding dimension for a table of `buckets` rows.

    The fourth-root rule of "Introducing TensorFlow Feature Columns" (Google Developers Blog,
    2017: dimension ~ buckets ** 0.25), scaled by 6 so small and mid-sized vocabularies keep a
    usable width, rounded to a multiple of 8 (TPU-friendly), bounded to [8, 512].
    Examples: 4 buckets -> 8, 5,000 -> 48, 1,000,000 -> 192.
    """
    raw = 6.0 * max(buckets, 1) ** 0.25
    return int(min(512, max(8, 8 * round(raw / 8))))


class PlanError(ValueError):
    """Statistics and config that cannot be planned; the message names what is wrong."""


def make_plan(
    stats: dict[str, Any],
    config: Config,
    length_coverage: float | None = None,
    dimension: int | None = None,
) -> EmbeddingPlan:
    """Decides tables, dimensions and sequence lengths from the measured statistics.

    Args:
      stats: the pipeline's stats.json.
      config: the config the pipeline ran with.
      length_coverage: overrides `sequence.length_coverage`.
      dimension: overrides every table's dimension.

    Returns:
      The plan.

    Raises:
      PlanError: the statistics lack a vocabulary or sequence the config names.
    """
    coverage = config.sequence.length_coverage if length_coverage is None else length_coverage
    if not 0.0 < coverage <= 1.0:
        raise PlanError(f"length coverage must be in (0, 1], got {coverage}")
    if dimension is not None and dimension < 1:
        raise PlanError(f"dimension must be > 0, got {dimension}")
    train_rows = int(stats["rows"]["train"])
    tables: dict[str, TablePlan] = {}
    features: dict[str, FeaturePlan] = {}
    dropped: dict[str, str] = {}
    notes: list[str] = []

    for vocabulary, names in config.vocabularies().items():
        measured = stats["vocabularies"].get(vocabulary)
        if measured is None:
            raise PlanError(
                f"stats.json has no vocabulary {vocabulary!r} that the config names; "
                "rerun the pipeline with this config"
            )
        entries = int(measured["size"])
        settings = config.vocabulary_config(vocabulary)
        if entries <= 1:
            for name in names:
                dropped[name] = (
                    f"vocabulary {vocabulary!r} has {entries} value(s) after top_k and "
                    f"frequency_threshold: a constant carries no information"
                )
            continue
        kept = []
        for name in names:
            feature = config.feature(name)
            plan = FeaturePlan(name=name, table=vocabulary, type=feature.type)
            if feature.type == "sequence":
                histogram = stats["sequences"][name]["histogram"]
                longest = int(stats["sequences"][name]["max"])
                if longest == 0:
                    dropped[name] = "every training sequence is empty"
                    continue
                if feature.max_sequence_length is not None:
                    length, plan.length_source = feature.max_sequence_length, "config"
                else:
                    length = statistics.coverage_length(histogram, coverage)
                    plan.length_source = "coverage"
                    length = max(length, 1)
                cost = statistics.truncation(histogram, length)
                plan.max_sequence_length = int(length)
                plan.truncate = feature.truncate
                plan.padding_efficiency = cost["padding_efficiency"]
                plan.truncated_fraction = cost["truncated_fraction"]
                plan.dropped_id_fraction = cost["dropped_id_fraction"]
                plan.longest = longest
                plan.longest_padding_efficiency = statistics.truncation(histogram, longest)[
                    "padding_efficiency"
                ]
            elif len(names) == 1 and train_rows:
                ratio = int(measured["distinct_values"]) / train_rows
                if ratio >= ID_LIKE_RATIO:
                    notes.append(
                        f"{name}: {measured['distinct_values']} distinct values in {train_rows} "
                        f"rows ({ratio:.0%}): id-like, its embedding will not generalise to "
                        "unseen values; consider dropping it or raising frequency_threshold"
                    )
            features[name] = plan
            kept.append(name)
        if not kept:
            continue
        buckets = entries + settings.num_oov_buckets
        if dimension is not None:
            width, source = dimension, "override"
        elif settings.dimension not in (None, "auto"):
            width, source = int(settings.dimension), "config"
        elif config.embedding.dimension != "auto":
            width, source = int(config.embedding.dimension), "config"
        else:
            width, source = auto_dimension(buckets), "auto"
        tables[vocabulary] = TablePlan(
            name=vocabulary,
            features=sorted(kept),
            vocabulary_size=int(buckets),
            dimension=int(width),
            combiner=config.embedding.combiner,
            entries=entries,
            num_oov_buckets=settings.num_oov_buckets,
            dimension_source=source,
        )

    for overlap in stats.get("vocabulary_overlaps", []):
        a, b = overlap["vocabularies"]
        if a not in stats["vocabularies"] or b not in stats["vocabularies"]:
            continue
        smaller = min(
            int(stats["vocabularies"][a]["distinct_values"]),
            int(stats["vocabularies"][b]["distinct_values"]),
        )
        share = int(overlap["shared_values"]) / smaller if smaller else 0.0
        if share >= SHARING_OVERLAP:
            notes.append(
                f"vocabularies {a!r} and {b!r} share {overlap['shared_values']} values "
                f"({share:.0%} of the smaller): if they name the same things, give their "
                f'features the same `vocabulary = "..."` to share one table'
            )

    return EmbeddingPlan(
        tables=tables,
        features=features,
        dropped=dropped,
        numeric_features=[f.name for f in config.features if f.type == "numeric"],
        label={"name": config.label.name, "type": config.label.type},
        length_coverage=coverage,
        notes=notes,
    )


def format_plan(plan: EmbeddingPlan) -> str:
    """The plan as a readable text table."""
    lines = ["Tables"]
    header = f"  {'table':<16}{'buckets':>10}{'dim':>6}  {'combiner':<9}features"
    lines.append(header)
    for table in plan.tables.values():
        lines.append(
            f"  {table.name:<16}{table.vocabulary_size:>10,}{table.dimension:>6}  "
            f"{table.combiner:<9}{', '.join(table.features)}"
            + ("  (shared)" if len(table.features) > 1 else "")
        )
    sequences = [f for f in plan.features.values() if f.type == "sequence"]
    if sequences:
        lines.append("")
        lines.append(
            f"Sequence lengths (coverage {plan.length_coverage:.0%} of training sequences)"
        )
        lines.append(
            f"  {'feature':<16}{'L':>6}{'longest':>9}{'padding eff.':>14}"
            f"{'at longest':>12}{'truncated':>11}{'ids dropped':>13}  keeps"
        )
        for f in sequences:
            lines.append(
                f"  {f.name:<16}{f.max_sequence_length:>6}{f.longest:>9}"
                f"{f.padding_efficiency:>14.1%}{f.longest_padding_efficiency:>12.1%}"
                f"{f.truncated_fraction:>11.1%}{f.dropped_id_fraction:>13.1%}  "
                f"{f.truncate.replace('keep_', '')}"
                + ("  (fixed in config)" if f.length_source == "config" else "")
            )
    if plan.numeric_features:
        lines.append("")
        lines.append(f"Numeric features: {', '.join(plan.numeric_features)}")
    lines.append("")
    if plan.dropped:
        lines.append("Dropped")
        for name, why in plan.dropped.items():
            lines.append(f"  {name}: {why}")
    else:
        lines.append("Dropped: none")
    if plan.notes:
        lines.append("")
        lines.append("Notes")
        lines.extend(f"  {note}" for note in plan.notes)
    return "\n".join(lines)


def plan_pipeline_output(
    pipeline_output: str,
    length_coverage: float | None = None,
    dimension: int | None = None,
) -> EmbeddingPlan:
    """Plans from a committed pipeline output and writes OUTPUT/embedding_plan.json.

    The plan is written after the commit, so the commit manifest does not list it.

    Raises:
      PipelineOutputError: OUTPUT has no valid commit (see `artifacts.require_complete`).
    """
    artifacts.require_complete(pipeline_output)
    return _plan_and_write(pipeline_output, length_coverage, dimension)


def _plan_and_write(
    pipeline_output: str, length_coverage: float | None = None, dimension: int | None = None
) -> EmbeddingPlan:
    stats = artifacts.read_json(pipeline_output, artifacts.STATS)
    config = read_pipeline_config(pipeline_output)
    plan = make_plan(stats, config, length_coverage=length_coverage, dimension=dimension)
    write_plan(pipeline_output, plan)
    return plan


def load_or_make_plan(pipeline_output: str) -> EmbeddingPlan:
    """The plan written by `python -m embedding`, or a fresh default plan if there is none.

    Raises:
      PipelineOutputError: OUTPUT has no valid commit (see `artifacts.require_complete`).
    """
    artifacts.require_complete(pipeline_output)
    return read_plan(pipeline_output) or _plan_and_write(pipeline_output)
