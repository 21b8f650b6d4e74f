"""TPU capacity: will the embedding tables fit, on which Cloud TPU slice, at what batch.

Pure arithmetic on the plan (no TensorFlow, no Beam), so the planner can say whether a plan
fits before a TPU job starts, and the trainer can refuse one before any TPU work.

What TPUEstimator's TPU embedding does with a table (read in TensorFlow 2.15's
`tensorflow/python/tpu/tpu_embedding.py`):
- every table is sharded over all TPU cores TPUEstimator sees (`num_tensor_cores` in the
  `TPUEmbeddingConfiguration`), with the `div` strategy that `EmbeddingConfigSpec` defaults to
  (`partition_strategy='div'`, `sharding_strategy = DIV_DEFAULT`): core i holds a contiguous
  block of ceil(rows / cores) rows at most;
- the optimizer's slots are tables of the same shape: stochastic gradient descent has none
  (`get_default_slot_variable_names` returns None), Adagrad one (`accumulator`), Adam two
  (`m` and `v`);
- weights and slots are float32, 4 bytes a value.

What a Cloud TPU slice offers (Cloud TPU documentation, read 2026-11-26):
- https://cloud.google.com/tpu/docs/types-topologies : a TensorCore-based type names the
  version and the number of TensorCores (v2-8: 8 TensorCores; "v4-128 ... 128 TensorCores");
  a v4 chip has 2 TensorCores (topology 2x2x4 = "16 chips, 2 TensorCores each").
- https://cloud.google.com/tpu/docs/v2 : TPU v2 types v2-8, v2-32, v2-128, v2-256, v2-512;
  each chip has two TensorCores; the page defers its figures to "A Domain Specific
  Supercomputer for Training Deep Neural Networks" (Jouppi et al., CACM 2020), which gives
  16 GiB of HBM per TPUv2 chip, i.e. 8 GiB per TensorCore.
- https://cloud.google.com/tpu/docs/v3 : "Each v3 TPU chip contains two TensorCores",
  "HBM2 capacity and bandwidth: 32 GiB, 900 GBps" per chip, i.e. 16 GiB per TensorCore; Pod
  of 1024 chips; types v3-8 to v3-2048.
- https://cloud.google.com/tpu/docs/v4 : "Each TPU v4 chip contains two TensorCores",
  "HBM2 capacity and bandwidth: 32 GiB, 1200 GBps" per chip; Pod of 4096 chips.
- https://cloud.google.com/tpu/docs/system-architecture-tpu-vm : a TPU host drives 4 chips
  (8 TensorCores of v2 or v3, 4 chips of v4).

How TensorFlow sees a v4 chip: v4 runs its two TensorCores as one "megacore" device (JAX's
`ChipVersion` table: v4 "Megacore support: Yes", v2 and v3 "No"), so on a v4-8 TPUEstimator
counts 4 TPU cores of 32 GiB each, where a v3-8 has 8 cores of 16 GiB. That is the count
the `div` sharding divides by and the count the global batch is split over.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from common.config import BIAS_SUFFIX
from common.formatting import human_bytes
from common.plan import EmbeddingPlan

GIB = 2**30
BYTES_PER_VALUE = 4
"""float32 weights and slots."""

OPTIMIZER_SLOTS = {"sgd": 0, "adagrad": 1, "adam": 2}
"""Slot tables a TPU embedding optimizer keeps beside the weights (see the module docstring)."""

DEFAULT_HEADROOM = 0.3
"""Share of each core's HBM kept free for the dense model, its optimizer slots, XLA's buffers
and the program; the embedding tables and their activations may use the rest."""

DEFAULT_BATCH_SIZE = 4096
"""The global batch the planner sizes activations for (the README's TPU command uses it)."""


class CapacityError(ValueError):
    """A TPU type that is not known, or a plan that does not fit; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Generation:
    """One Cloud TPU version, as TPUEstimator sees it.

    Attributes:
      name: "v2", "v3" or "v4".
      hbm_per_chip: bytes of HBM on one chip.
      tensorcores_per_chip: TensorCores on one chip (the number in a type name counts them).
      devices_per_chip: TPU cores TensorFlow sees on one chip (1 for v4's megacore).
      chips_per_host: chips one TPU host (VM) drives.
      types: the slice sizes Cloud TPU offers, in TensorCores.
    """

    name: str
    hbm_per_chip: int
    tensorcores_per_chip: int
    devices_per_chip: int
    chips_per_host: int
    types: tuple[int, ...]


GENERATIONS = {
    "v2": Generation("v2", 16 * GIB, 2, 2, 4, (8, 32, 128, 256, 512)),
    "v3": Generation("v3", 32 * GIB, 2, 2, 4, (8, 32, 64, 128, 256, 512, 1024, 2048)),
    "v4": Generation(
        "v4", 32 * GIB, 2, 1, 4, (8, 16, 32, 64, 128, 256, 512, 1024, 1536, 2048, 4096)
    ),
}


@dataclasses.dataclass(frozen=True)
class TpuSlice:
    """One TPU slice type.

    Attributes:
      name: the accelerator type, e.g. "v3-8".
      generation: the TPU version.
      tensorcores: TensorCores in the slice (the number in the name).
      chips: chips in the slice.
      cores: TPU cores TPUEstimator sees: tables are sharded and the batch split over them.
      hosts: TPU hosts (VMs), each feeding its cores.
      hbm_per_core: bytes of HBM each of those cores has.
    """

    name: str
    generation: Generation
    tensorcores: int
    chips: int
    cores: int
    hosts: int
    hbm_per_core: int


def tpu_slice(name: str) -> TpuSlice:
    """The slice an accelerator type names ("v2-8", "v3-32", "v4-16", ...).

    Raises:
      CapacityError: not a v2, v3 or v4 type Cloud TPU offers.
    """
    match = re.fullmatch(r"(v[234])-(\d+)", name.strip().lower())
    known = ", ".join(f"{g}-{n}" for g, gen in GENERATIONS.items() for n in gen.types)
    if not match or int(match.group(2)) not in GENERATIONS[match.group(1)].types:
        raise CapacityError(
            f"--tpu-type {name!r} is not a TPU type TPUEstimator's embedding support targets; "
            f"use one of: {known}"
        )
    generation = GENERATIONS[match.group(1)]
    tensorcores = int(match.group(2))
    chips = tensorcores // generation.tensorcores_per_chip
    return TpuSlice(
        name=f"{generation.name}-{tensorcores}",
        generation=generation,
        tensorcores=tensorcores,
        chips=chips,
        cores=chips * generation.devices_per_chip,
        hosts=max(chips // generation.chips_per_host, 1),
        hbm_per_core=generation.hbm_per_chip // generation.devices_per_chip,
    )


def all_slices() -> list[TpuSlice]:
    """Every known slice, smallest first: fewer chips first, the older generation first."""
    slices = [tpu_slice(f"{g}-{n}") for g, gen in GENERATIONS.items() for n in gen.types]
    order = list(GENERATIONS)
    return sorted(slices, key=lambda s: (s.chips, order.index(s.generation.name)))


def optimizer_slots(optimizer: str) -> int:
    """Slot tables of a TPU embedding optimizer.

    Raises:
      CapacityError: an optimizer this project does not configure.
    """
    if optimizer not in OPTIMIZER_SLOTS:
        raise CapacityError(
            f"embedding optimizer {optimizer!r} is not one of {', '.join(OPTIMIZER_SLOTS)}"
        )
    return OPTIMIZER_SLOTS[optimizer]


def table_bytes(rows: int, dimension: int, slots: int) -> dict[str, int]:
    """Bytes of one table: weights, the optimizer's slots, and their total."""
    weights = rows * dimension * BYTES_PER_VALUE
    return {
        "weight_bytes": weights,
        "slot_bytes": slots * weights,
        "total_bytes": (1 + slots) * weights,
    }


def activation_bytes(batch_size: int, length: int, dimension: int) -> dict[str, int]:
    """Bytes of the activations one lookup hands the model in a step, at a global batch.

    A sequence feature looked up as a sequence moves batch x L x dimension values; pooled in
    the lookup (the combiner) it would move batch x dimension. A categorical feature (L = 0)
    moves batch x dimension either way.
    """
    pooled = batch_size * dimension * BYTES_PER_VALUE
    return {"sequence_bytes": pooled * max(length, 1), "pooled_bytes": pooled}


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """What the trainer builds from a plan: which tables lie on the TPU and how each feature
    is looked up. None in place of one (`capacity(model=None)`) counts the plan as it is:
    every table, every sequence looked up as a sequence, no bias table.

    Attributes:
      pool_sequences: sequences pooled in the lookup, one vector a row (the default model;
        --history-attention looks them up as [batch, L, dim]).
      id_bias: a dimension-1 bias table `TABLE__bias` beside each table with a categorical
        feature (--id-bias, on by default).
      key_features: features read through their bias only, no embedding (the split key,
        --key-term): a table that only they look up is not built, its bias table is.
    """

    pool_sequences: bool = True
    id_bias: bool = True
    key_features: tuple[str, ...] = ()

    @classmethod
    def of(cls, plan: EmbeddingPlan, split_key: str, key_term: bool = True, **flags):
        """The trainer's model of `plan`: the split key, where the plan has it as a
        categorical feature, read through its bias only (trainer.prepare.key_features)."""
        feature = plan.features.get(split_key)
        key = feature is not None and feature.type == "categorical" and key_term
        return cls(key_features=(split_key,) if key else (), **flags)


def built_tables(plan: EmbeddingPlan, model: ModelShape | None) -> dict[str, tuple[int, int]]:
    """Table name -> (rows, dimension) of every table the model puts on the TPU."""
    if model is None:
        return {t.name: (t.vocabulary_size, t.dimension) for t in plan.tables.values()}
    tables = {}
    for t in plan.tables.values():
        if any(n not in model.key_features for n in t.features):
            tables[t.name] = (t.vocabulary_size, t.dimension)
        if model.id_bias and any(plan.features[n].type == "categorical" for n in t.features):
            tables[t.name + BIAS_SUFFIX] = (t.vocabulary_size, 1)
    return tables


def lookups(plan: EmbeddingPlan, model: ModelShape | None) -> list[tuple[int, int]]:
    """(values a row, dimension) of every lookup the model makes a step: L for a sequence
    looked up as one, else 1 (pooled in the lookup, or one id)."""
    found = []
    for f in plan.features.values():
        if f.table not in plan.tables:
            continue
        pooled = model is not None and model.pool_sequences
        if model is None or f.name not in model.key_features:
            length = 1 if pooled else max(f.max_sequence_length, 1)
            found.append((length, plan.tables[f.table].dimension))
        if model is not None and model.id_bias and f.type == "categorical":
            found.append((1, 1))
    return found


def _shard_rows(rows: int, cores: int) -> int:
    """Rows on the fullest core under `div` sharding: the first rows % cores get one more."""
    return math.ceil(rows / cores)


@dataclasses.dataclass
class SliceFit:
    """How the plan's tables sit on one slice.

    Attributes:
      tpu_type: the slice.
      cores: TPU cores the tables are sharded over.
      hbm_per_core: bytes of HBM a core has.
      table_bytes_per_core: weights and slots on the fullest core.
      activation_bytes_per_core: the activations of a core's share of the batch, and their
        gradients on the way back.
      usable_bytes_per_core: HBM less the headroom.
      share: (tables + activations) / HBM of a core.
      fits: tables + activations <= usable.
    """

    tpu_type: str
    cores: int
    hbm_per_core: int
    table_bytes_per_core: int
    activation_bytes_per_core: int
    usable_bytes_per_core: int
    share: float
    fits: bool


def fit_on(
    plan: EmbeddingPlan,
    tpu: TpuSlice,
    slots: int,
    batch_size: int,
    headroom: float,
    model: ModelShape | None = None,
) -> SliceFit:
    """The tables and activations of the plan's model (`ModelShape`) on one slice."""
    tables = sum(
        _shard_rows(rows, tpu.cores) * dimension * BYTES_PER_VALUE * (1 + slots)
        for rows, dimension in built_tables(plan, model).values()
    )
    per_core_batch = math.ceil(batch_size / tpu.cores)
    activations = 2 * sum(
        per_core_batch * length * dimension * BYTES_PER_VALUE
        for length, dimension in lookups(plan, model)
    )
    usable = int(tpu.hbm_per_core * (1.0 - headroom))
    return SliceFit(
        tpu_type=tpu.name,
        cores=tpu.cores,
        hbm_per_core=tpu.hbm_per_core,
        table_bytes_per_core=tables,
        activation_bytes_per_core=activations,
        usable_bytes_per_core=usable,
        share=(tables + activations) / tpu.hbm_per_core,
        fits=tables + activations <= usable,
    )


def _check_settings(batch_size: int, headroom: float) -> None:
    if batch_size < 1:
        raise CapacityError(f"the global batch size must be >= 1, got {batch_size}")
    if not 0.0 <= headroom < 1.0:
        raise CapacityError(f"--hbm-headroom must be in [0, 1), got {headroom}")


def capacity(
    plan: EmbeddingPlan,
    optimizer: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    headroom: float = DEFAULT_HEADROOM,
    tpu_type: str | None = None,
    model: ModelShape | None = None,
) -> dict[str, Any]:
    """The capacity section of the plan (`embedding_plan.json` key `capacity`).

    Args:
      plan: the embedding plan (its tables and sequence lengths).
      optimizer: the TPU embedding optimizer (`[embedding] optimizer`).
      batch_size: the global batch the activations are sized for.
      headroom: share of each core's HBM kept for the dense model and XLA.
      tpu_type: a slice to report on specially (`target`), or None.
      model: what the trainer builds from the plan (`ModelShape`); None: the plan as is.

    Returns:
      A JSON-able dict: `tables` (rows, dimension, weight/slot/total bytes), `activations`
      (per feature: bytes a step moves as a sequence and pooled), `slices` (every known slice:
      cores, HBM per core, bytes per core, share, fits), `smallest_fit` (None when none fits)
      and `target` (the fit on `tpu_type`).

    Raises:
      CapacityError: unknown optimizer or TPU type, or settings out of range.
    """
    slots = optimizer_slots(optimizer)
    _check_settings(batch_size, headroom)
    target = tpu_slice(tpu_type) if tpu_type else None
    tables = {
        name: {"rows": rows, "dimension": dimension} | table_bytes(rows, dimension, slots)
        for name, (rows, dimension) in built_tables(plan, model).items()
    }
    activations = {
        f.name: {
            "table": f.table,
            "type": f.type,
            "max_sequence_length": f.max_sequence_length,
            "dimension": plan.tables[f.table].dimension,
        }
        | activation_bytes(batch_size, f.max_sequence_length, plan.tables[f.table].dimension)
        for f in plan.features.values()
        if f.table in plan.tables and (model is None or f.name not in model.key_features)
    }
    fits = [fit_on(plan, s, slots, batch_size, headroom, model) for s in all_slices()]
    smallest = next((f.tpu_type for f in fits if f.fits), None)
    return {
        "optimizer": optimizer,
        "slots": slots,
        "bytes_per_value": BYTES_PER_VALUE,
        "batch_size": batch_size,
        "headroom": headroom,
        "total_bytes": sum(t["total_bytes"] for t in tables.values()),
        "tables": tables,
        "activations": activations,
        "slices": [dataclasses.asdict(f) for f in fits],
        "smallest_fit": smallest,
        "model": None
        if model is None
        else {**dataclasses.asdict(model), "key_features": list(model.key_features)},
        "target": (
            dataclasses.asdict(fit_on(plan, target, slots, batch_size, headroom, model))
            if target
            else None
        ),
    }


def smallest_fit_in(report: dict[str, Any], generation: str) -> str | None:
    """The smallest slice of one generation that holds the plan, from `capacity()`'s report."""
    return next(
        (
            s["tpu_type"]
            for s in report["slices"]
            if s["fits"] and s["tpu_type"].startswith(f"{generation}-")
        ),
        None,
    )


def refusal(
    plan: EmbeddingPlan,
    optimizer: str,
    tpu_type: str,
    batch_size: int,
    headroom: float = DEFAULT_HEADROOM,
    model: ModelShape | None = None,
) -> str | None:
    """Why the plan's model cannot train on `tpu_type`, with the numbers; None when it fits.

    Raises:
      CapacityError: unknown TPU type or optimizer.
    """
    report = capacity(plan, optimizer, batch_size, headroom, tpu_type, model)
    fit = report["target"]
    if fit["fits"]:
        return None
    tpu = tpu_slice(tpu_type)
    tables = "; ".join(
        f"{name} {t['rows']:,} x {t['dimension']} = {human_bytes(t['weight_bytes'])} of weights + "
        f"{human_bytes(t['slot_bytes'])} of {optimizer} slots = {human_bytes(t['total_bytes'])}"
        for name, t in report["tables"].items()
    )
    smallest = report["smallest_fit"]
    same = smallest_fit_in(report, tpu.generation.name)
    where = (
        f"the smallest slice that would fit is {smallest}"
        + (f" ({same} in {tpu.generation.name})" if same and same != smallest else "")
        if smallest
        else "no v2, v3 or v4 slice holds them"
    )
    return (
        f"the embedding tables do not fit a {tpu.name}: sharded (div) over its {tpu.cores} TPU "
        f"cores of {tpu.hbm_per_core / GIB:g} GiB HBM, each core would hold "
        f"{human_bytes(fit['table_bytes_per_core'])} of tables and "
        f"{human_bytes(fit['activation_bytes_per_core'])} "
        f"of activations at global batch {batch_size:,}, {fit['share']:.1%} of its HBM, over "
        f"the {1 - headroom:.0%} left after the {headroom:.0%} kept for the dense model. "
        f"Tables: {tables}. {where[0].upper()}{where[1:]}. Train on a larger slice "
        "(--tpu-type), or shrink the tables: mark vocabularies `shrinkable = true` in the "
        "config and run `python -m embedding --pipeline-output OUTPUT --tpu-type "
        f"{tpu.name} --fit`."
    )


def coverage_at(curve: dict[str, float], k: int) -> float:
    """Share of training tokens the k most frequent values cover, from the measured curve.

    The curve (stats.json `coverage`) is measured at powers of two and at the number of
    distinct values; between two measured points it is read on the straight line, which is a
    lower bound because the curve is concave (values are ranked by falling frequency).
    """
    points = sorted((int(n), float(share)) for n, share in curve.items())
    if k <= 0 or not points:
        return 0.0
    previous = (0, 0.0)
    for n, share in points:
        if k <= n:
            (n0, s0) = previous
            return s0 + (share - s0) * (k - n0) / (n - n0)
        previous = (n, share)
    return points[-1][1]


@dataclasses.dataclass
class Change:
    """One thing the fit shrank.

    Attributes:
      table: the table (vocabulary).
      what: "top_k" (needs a pipeline rerun) or "dimension" (applies to this plan).
      before, after: the value before and after.
      coverage_before, coverage_after: for top_k, the share of training tokens in vocabulary.
    """

    table: str
    what: str
    before: int
    after: int
    coverage_before: float | None = None
    coverage_after: float | None = None


def _scaled_plan(plan: EmbeddingPlan, entries: dict[str, int], dims: dict[str, int]):
    tables = {
        name: dataclasses.replace(
            t,
            vocabulary_size=entries.get(name, t.entries) + t.num_oov_buckets,
            entries=entries.get(name, t.entries),
            dimension=dims.get(name, t.dimension),
        )
        for name, t in plan.tables.items()
    }
    return dataclasses.replace(plan, tables=tables)


def _largest_fitting(fits, lo: float = 0.0, hi: float = 1.0, steps: int = 40) -> float | None:
    """The largest factor in (lo, hi] for which `fits(factor)` holds (monotone), or None."""
    if fits(hi):
        return hi
    if not fits(lo):
        return None
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def fit_to_slice(
    plan: EmbeddingPlan,
    stats: dict[str, Any],
    shrinkable: list[str],
    optimizer: str,
    tpu_type: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    headroom: float = DEFAULT_HEADROOM,
    model: ModelShape | None = None,
) -> tuple[EmbeddingPlan, list[Change], bool]:
    """Shrinks what the user allows until the plan fits `tpu_type`.

    First the vocabularies in `shrinkable`: every one keeps the same (largest) share of its
    entries, as lowering `top_k` would; what that costs is read from the measured coverage
    curves. Then, if that is not enough, the width of the tables whose dimension comes from the
    rule ("auto"), scaled by one factor and kept a multiple of 8 (at least 8).

    Args:
      plan: the plan as measured.
      stats: the pipeline's stats.json (coverage curves).
      shrinkable: the vocabularies whose top_k may be lowered.
      optimizer: the TPU embedding optimizer.
      tpu_type: the slice to fit.
      batch_size: global batch size for the activations.
      headroom: share of each core's HBM kept for the dense model.

    Returns:
      (the shrunk plan, what changed, whether it fits). A top_k change only takes effect
      after the pipeline reruns with it; the dimension changes apply to this pipeline output.
    """
    slots = optimizer_slots(optimizer)
    _check_settings(batch_size, headroom)
    tpu = tpu_slice(tpu_type)

    def fits(candidate: EmbeddingPlan) -> bool:
        return fit_on(candidate, tpu, slots, batch_size, headroom, model).fits

    adjustable = [n for n in shrinkable if n in plan.tables]

    def entries_at(factor: float) -> dict[str, int]:
        return {n: max(2, math.floor(plan.tables[n].entries * factor)) for n in adjustable}

    changes: list[Change] = []
    entries: dict[str, int] = {}
    if adjustable and not fits(plan):
        factor = _largest_fitting(lambda f: fits(_scaled_plan(plan, entries_at(f), {})))
        entries = entries_at(0.0 if factor is None else factor)
    for name in adjustable:
        before, after = plan.tables[name].entries, entries.get(name, plan.tables[name].entries)
        if after < before:
            measured = stats["vocabularies"][name]
            curve = measured.get("coverage", {})
            # The vocabulary as it is covers exactly the tokens not out of it.
            oov_rate = measured.get("oov_rate")
            was = coverage_at(curve, before) if oov_rate is None else 1.0 - oov_rate
            changes.append(
                Change(name, "top_k", before, after, was, min(coverage_at(curve, after), was))
            )

    automatic = [n for n, t in plan.tables.items() if t.dimension_source == "auto"]

    def dims_at(factor: float) -> dict[str, int]:
        return {n: max(8, 8 * math.floor(plan.tables[n].dimension * factor / 8)) for n in automatic}

    dims: dict[str, int] = {}
    if automatic and not fits(_scaled_plan(plan, entries, {})):
        factor = _largest_fitting(lambda f: fits(_scaled_plan(plan, entries, dims_at(f))))
        dims = dims_at(0.0 if factor is None else factor)
    for name in automatic:
        before, after = plan.tables[name].dimension, dims.get(name, plan.tables[name].dimension)
        if after < before:
            changes.append(Change(name, "dimension", before, after))
    shrunk = _scaled_plan(plan, entries, dims)
    return shrunk, changes, fits(shrunk)
