"""Measured statistics + config -> the embedding plan. Pure Python: no TensorFlow.

The plan decides, from what the pipeline measured:
- one table per vocabulary, sized as vocabulary entries plus OOV buckets;
- each sequence feature's `max_sequence_length`, the smallest L that covers
  `sequence.length_coverage` of the training sequences (an explicit per-feature value wins);
- each bag's cap on ids (`common.statistics.bag_cap`: the longest bag measured, unless a few
  outliers make it far longer than the 99.9% quantile); a bag is pooled in the lookup;
- each table's dimension (`"auto"`: see `auto_dimension`);
- which columns are dropped, and why: a constant, an always-empty list, or a feature whose eval
  values the training split almost never holds (`UNSEEN_DROP_RATE`; `keep = true` keeps it);
- which vocabularies look like names of the same things and could share a table (notes);
- what the tables need on a TPU (`embedding.capacity`): bytes of weights and optimizer slots,
  activations a step moves, the share of each slice's HBM, the smallest slice that fits; and,
  with `fit`, what to shrink to fit a given slice.

The plan is written as `embedding_plan.json`; the TPU columns and the trainer are built from
it, never from numbers typed by hand.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from common import artifacts, statistics
from common.config import Config, read_pipeline_config
from common.formatting import human_bytes
from common.plan import EmbeddingPlan, FeaturePlan, TablePlan, read_plan, write_plan
from embedding import capacity

ID_LIKE_RATIO = 0.5
"""A categorical whose distinct values reach this share of its rows is flagged as id-like."""

SHARING_TOKEN_SHARE = 0.5
SHARING_CORRELATION = 0.6
SHARING_MIN_VALUES = 10
"""Two vocabularies are suggested to share a table when at least SHARING_MIN_VALUES values
are shared, the shared values hold at least SHARING_TOKEN_SHARE of the tokens of EACH
vocabulary, and their log frequencies correlate over the shared values by at least
SHARING_CORRELATION (a value frequent in one is frequent in the other). Integer codes of
unrelated things (ages 1..60 and item ids) share values by accident: the ages put all their
tokens on shared values, but the items few of theirs, and the frequencies do not agree."""

UNSEEN_DROP_RATE = 0.9
MIN_EVAL_TOKENS = 10
"""A feature of whose eval tokens (at least MIN_EVAL_TOKENS) at least UNSEEN_DROP_RATE were
never seen in training is dropped: outside training it looks up an untrained OOV row almost
always, so what it learned cannot help new rows (the split key used as a feature: every eval
user is new). `keep = true` in its [[feature]] keeps it. The split key itself, when the config
lists it as a categorical feature, is kept: the trainer gives it a per-id bias only, a term that
absorbs each training key's own effect (`embedding.columns`)."""


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


def _empty_vocabulary(vocabulary: str, measured: dict, frequency_threshold: int) -> str:
    """Why a vocabulary keeps no value, from its stats.json entry."""
    distinct = int(measured.get("distinct_values", 0))
    if not distinct:
        return f"vocabulary {vocabulary!r} has no value in the training split"
    return (
        f"vocabulary {vocabulary!r} keeps no value: none of its {distinct:,} distinct training "
        f"values occurs frequency_threshold ({frequency_threshold:,}) times"
    )


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
        # One kept value with training tokens outside it (top_k 1) still tells that value
        # from the rest: two ids, the value's and the OOV bucket's.
        outside = settings.num_oov_buckets > 0 and (measured.get("oov_rate") or 0.0) > 0.0
        if entries == 0 or (entries == 1 and not outside):
            reason = (
                f"vocabulary {vocabulary!r} has 1 value after top_k and frequency_threshold "
                "and no training token outside it: a constant carries no information"
                if entries
                else _empty_vocabulary(vocabulary, measured, settings.frequency_threshold)
            )
            dropped.update(dict.fromkeys(names, reason))
            continue
        kept = []
        for name in names:
            feature = config.feature(name)
            plan = FeaturePlan(name=name, table=vocabulary, type=feature.type)
            unseen = _unseen_in_training(stats, name)
            if unseen is not None:
                if name == config.split.key and feature.type == "categorical":
                    notes.append(
                        f"{name}: the split key, kept for a per-key term in training only (the "
                        "trainer gives it a per-id bias and no embedding; eval's unseen keys "
                        "read its OOV row, trained to stand for the average key): "
                        + unseen.split(" (")[0]
                    )
                elif not feature.keep:
                    dropped[name] = unseen + "; set keep = true in its [[feature]] to keep it"
                    continue
                else:
                    notes.append(f"{name}: kept (keep = true) although {unseen}")
            if feature.type == "bag":
                measured_bag = stats["bags"][name]
                histogram = measured_bag["histogram"]
                if int(measured_bag["max"]) == 0:
                    dropped[name] = "every training bag is empty"
                    continue
                plan.max_ids = statistics.bag_cap(histogram)
                plan.longest = int(measured_bag["max"])
                plan.dropped_id_fraction = statistics.truncation(histogram, plan.max_ids)[
                    "dropped_id_fraction"
                ]
            elif feature.type == "sequence":
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
                notes.append(
                    f"{name}: the default model only averages it, so the trainer pools it in "
                    "the TPU lookup (max_sequence_length 0: batch x dim activations a step, "
                    f"not batch x {plan.max_sequence_length} x dim), on the "
                    f"{plan.truncate.removeprefix('keep_')} {plan.max_sequence_length} ids a row; "
                    "`--history-attention` uses its positions and looks it up as a sequence. "
                    "Unordered, as "
                    f'type = "bag", it would keep up to {statistics.bag_cap(histogram)} ids a row'
                )
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

    notes.extend(sharing_suggestions(stats))

    return EmbeddingPlan(
        tables=tables,
        features=features,
        dropped=dropped,
        numeric_features=[f.name for f in config.features if f.type == "numeric"],
        label={"name": config.label.name, "type": config.label.type},
        length_coverage=coverage,
        notes=notes,
    )


def _unseen_in_training(stats: dict[str, Any], feature: str) -> str | None:
    """Why `feature` is dropped for values unseen in training, or None if it is not.

    Stats written before the eval split was measured have no `eval_skew`: nothing is dropped.
    """
    measured = stats.get("eval_skew", {}).get("features", {}).get(feature)
    if not measured or int(measured["tokens"]) < MIN_EVAL_TOKENS:
        return None
    rate = float(measured["unseen_rate"])
    if rate < UNSEEN_DROP_RATE:
        return None
    return (
        f"{rate:.1%} of its {int(measured['tokens']):,} eval values never occur in training "
        "(is it the split key, or an id unique to a row?): outside training it would look up "
        "an untrained OOV row"
    )


def sharing_suggestions(stats: dict[str, Any]) -> list[str]:
    """Notes suggesting a shared table for vocabularies that name the same things (see
    SHARING_TOKEN_SHARE); overlaps measured before the evidence existed suggest nothing."""
    notes = []
    for overlap in stats.get("vocabulary_overlaps", []):
        a, b = overlap["vocabularies"]
        if "log_frequency_correlation" not in overlap:
            continue
        shared = int(overlap["shared_values"])
        share_a, share_b = overlap["token_share_a"], overlap["token_share_b"]
        correlation = overlap["log_frequency_correlation"]
        if (
            shared >= SHARING_MIN_VALUES
            and min(share_a, share_b) >= SHARING_TOKEN_SHARE
            and correlation >= SHARING_CORRELATION
        ):
            notes.append(
                f"vocabularies {a!r} and {b!r} look like names of the same things: {shared:,} "
                f"shared values hold {share_a:.0%} of {a!r}'s tokens and {share_b:.0%} of "
                f"{b!r}'s, and their frequencies agree (correlation of log frequencies "
                f'{correlation:.2f}); give their features the same `vocabulary = "..."` to '
                "share one table"
            )
    return notes


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
    bags = [f for f in plan.features.values() if f.type == "bag"]
    if bags:
        lines.append("")
        lines.append("Bags (pooled in the lookup, every id kept up to the cap)")
        lines.append(f"  {'feature':<16}{'cap':>6}{'longest':>9}{'ids dropped':>13}")
        for f in bags:
            lines.append(
                f"  {f.name:<16}{f.max_ids:>6}{f.longest:>9}{f.dropped_id_fraction:>13.2%}"
            )
    if plan.capacity:
        lines.append("")
        lines.extend(format_capacity(plan.capacity))
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


def format_capacity(report: dict[str, Any]) -> list[str]:
    """The capacity section of the printed plan: tables, activations, slices, fit."""
    slots = {0: "no slots", 1: "1 slot table", 2: "2 slot tables"}[report["slots"]]
    lines = [
        f"TPU capacity ({report['optimizer']}: {slots}; float32 weights and slots; "
        f"global batch {report['batch_size']:,})",
        f"  {'table':<16}{'rows x dim':>20}{'weights':>13}{'slots':>13}{'total':>13}",
    ]
    for name, t in report["tables"].items():
        lines.append(
            f"  {name:<16}{t['rows']:>12,} x {t['dimension']:<5}"
            f"{human_bytes(t['weight_bytes']):>13}"
            f"{human_bytes(t['slot_bytes']):>13}{human_bytes(t['total_bytes']):>13}"
        )
    lines.append(
        f"  {'all tables':<16}{'':>20}{'':>13}{'':>13}{human_bytes(report['total_bytes']):>13}"
    )
    sequences = {n: a for n, a in report["activations"].items() if a["type"] == "sequence"}
    if sequences:
        lines.append(
            f"  Activations a step moves at global batch {report['batch_size']:,} "
            "(batch x L x dim x 4; pooled in the lookup: batch x dim x 4)"
        )
        lines.append(f"  {'feature':<16}{'L':>6}{'dim':>6}{'as sequence':>14}{'pooled':>12}")
        for name, a in sequences.items():
            lines.append(
                f"  {name:<16}{a['max_sequence_length']:>6}{a['dimension']:>6}"
                f"{human_bytes(a['sequence_bytes']):>14}{human_bytes(a['pooled_bytes']):>12}"
            )
    model = report.get("model")
    if model:
        parts = [
            *(["sequences pooled in the lookup"] if model["pool_sequences"] else []),
            *(
                ["a dimension-1 bias table beside each categorical table"]
                if model["id_bias"]
                else []
            ),
            *(f"{name} read through its bias only" for name in model["key_features"]),
        ]
        lines.append(
            f"  The fit counts the trainer's default model ({'; '.join(parts)}); the trainer "
            "checks the model its flags build when it starts (--history-attention: sequences)"
        )
    lines.append(
        f"  Per TPU core, tables sharded (div) over every core; {report['headroom']:.0%} of "
        "each core's HBM kept for the dense model"
    )
    lines.append(
        f"  {'slice':<9}{'cores':>6}{'HBM/core':>10}{'tables/core':>14}{'activ./core':>13}"
        f"{'share':>8}  fits"
    )
    shown, done = [], set()
    for s in report["slices"]:
        generation = s["tpu_type"].split("-")[0]
        if generation in done:
            continue
        shown.append(s)
        if s["fits"]:
            done.add(generation)
    target = report.get("target")
    if target and target["tpu_type"] not in {s["tpu_type"] for s in shown}:
        shown.append(target)
    for s in shown:
        lines.append(
            f"  {s['tpu_type']:<9}{s['cores']:>6}{s['hbm_per_core'] / 2**30:>6g} GiB"
            f"{human_bytes(s['table_bytes_per_core']):>14}{human_bytes(s['activation_bytes_per_core']):>13}"
            f"{s['share']:>8.1%}  {'yes' if s['fits'] else 'no'}"
        )
    smallest = report["smallest_fit"] or "none of v2, v3, v4 (up to their full Pods)"
    lines.append(f"  Smallest slice that fits: {smallest}")
    if target:
        lines.append(
            f"  --tpu-type {target['tpu_type']}: "
            + ("fits" if target["fits"] else f"does NOT fit ({target['share']:.1%} of HBM a core)")
        )
    fit = report.get("fit")
    if fit:
        lines.append(f"  Fit to {fit['tpu_type']}:")
        if not fit["changes"]:
            lines.append("    nothing to shrink" if fit["fits"] else "    nothing may be shrunk")
        for c in fit["changes"]:
            if c["what"] == "top_k":
                lines.append(
                    f"    {c['table']}: top_k {c['before']:,} -> {c['after']:,}: at least "
                    f"{c['coverage_after']:.2%} of training tokens in vocabulary (was "
                    f"{c['coverage_before']:.2%}); set [vocabulary.{c['table']}] top_k = "
                    f"{c['after']} and rerun the pipeline, then the planner"
                )
            else:
                lines.append(
                    f"    {c['table']}: dimension {c['before']} -> {c['after']} (the auto rule "
                    "scaled down; applied to this plan; its cost in quality is not measured)"
                )
        if not fit["fits"]:
            lines.append(
                f"    even shrunk as far as allowed the tables do not fit {fit['tpu_type']}; mark "
                "more vocabularies shrinkable or choose a larger slice"
            )
    return lines


def add_capacity(
    plan: EmbeddingPlan,
    stats: dict[str, Any],
    config: Config,
    tpu_type: str | None = None,
    batch_size: int = capacity.DEFAULT_BATCH_SIZE,
    headroom: float = capacity.DEFAULT_HEADROOM,
    fit: bool = False,
) -> EmbeddingPlan:
    """The plan with its TPU capacity section; with `fit`, shrunk to fit `tpu_type`.

    A fit lowers the dimension of "auto" tables in the returned plan (it applies to this
    pipeline output) and records the lower `top_k` of shrinkable vocabularies as changes to
    make (the transformed data holds ids of the measured vocabulary until the pipeline reruns).

    Raises:
      PlanError: `fit` without `tpu_type`, or an unknown TPU type or optimizer.
    """
    optimizer = config.embedding.optimizer
    model = capacity.ModelShape.of(plan, config.split.key)  # the trainer's default model
    try:
        fitted = None
        if fit:
            if not tpu_type:
                raise PlanError("--fit needs --tpu-type: the slice to fit the tables to")
            shrinkable = [v for v in plan.tables if config.vocabulary_config(v).shrinkable]
            shrunk, changes, fits = capacity.fit_to_slice(
                plan, stats, shrinkable, optimizer, tpu_type, batch_size, headroom, model
            )
            dims = {c.table: c.after for c in changes if c.what == "dimension"}
            plan = dataclasses.replace(
                plan,
                tables={
                    n: dataclasses.replace(t, dimension=dims.get(n, t.dimension))
                    for n, t in plan.tables.items()
                },
            )
            fitted = {
                "tpu_type": tpu_type,
                "fits": fits,
                "changes": [dataclasses.asdict(c) for c in changes],
            }
        report = capacity.capacity(plan, optimizer, batch_size, headroom, tpu_type, model)
    except capacity.CapacityError as e:
        raise PlanError(str(e)) from e
    if fitted:
        report["fit"] = fitted
    return dataclasses.replace(plan, capacity=report)


def plan_pipeline_output(
    pipeline_output: str,
    length_coverage: float | None = None,
    dimension: int | None = None,
    tpu_type: str | None = None,
    batch_size: int = capacity.DEFAULT_BATCH_SIZE,
    headroom: float = capacity.DEFAULT_HEADROOM,
    fit: bool = False,
) -> EmbeddingPlan:
    """Plans from a committed pipeline output and writes OUTPUT/embedding_plan.json.

    Also re-renders OUTPUT/report.html with the plan's TPU capacity section. The plan is
    written after the commit, so the commit manifest does not list it (nor checks the size of
    the re-rendered report). The arguments after `dimension` are those of `add_capacity`.

    Raises:
      PipelineOutputError: OUTPUT has no valid commit (see `artifacts.require_complete`).
    """
    from pipeline import report

    artifacts.require_complete(pipeline_output)
    stats = artifacts.read_json(pipeline_output, artifacts.STATS)
    config = read_pipeline_config(pipeline_output)
    plan = make_plan(stats, config, length_coverage=length_coverage, dimension=dimension)
    plan = add_capacity(plan, stats, config, tpu_type, batch_size, headroom, fit)
    write_plan(pipeline_output, plan)
    artifacts.write_text(
        pipeline_output,
        artifacts.REPORT,
        report.render(
            stats,
            config,
            f"Pipeline report: {pipeline_output}",
            capacity=plan.capacity,
            lengths={
                name: f.max_sequence_length
                for name, f in plan.features.items()
                if f.type == "sequence"
            },
        ),
    )
    return plan


def load_or_make_plan(pipeline_output: str) -> EmbeddingPlan:
    """The plan written by `python -m embedding`, or a fresh default plan if there is none.

    Raises:
      PipelineOutputError: OUTPUT has no valid commit (see `artifacts.require_complete`).
    """
    artifacts.require_complete(pipeline_output)
    return read_plan(pipeline_output) or plan_pipeline_output(pipeline_output)
