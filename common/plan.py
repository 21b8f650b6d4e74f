"""The embedding plan: the contract between the planner, the TPU columns and the trainer.

`EmbeddingPlan.to_dict` is the `embedding_plan.json` format; the planner (`embedding.planner`)
writes it into the pipeline's OUTPUT, the trainer reads it from there and copies it beside its
checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from common import artifacts


@dataclasses.dataclass
class TablePlan:
    """One embedding table (one vocabulary).

    Attributes:
      name: the vocabulary name, also the shared embedding collection name.
      features: the features looked up in it, sorted.
      vocabulary_size: buckets: vocabulary entries plus OOV buckets.
      dimension: the embedding width.
      combiner: how a sequence's embeddings are pooled.
      entries: vocabulary entries (without OOV buckets).
      num_oov_buckets: OOV buckets.
      dimension_source: "auto", "config" or "override".
    """

    name: str
    features: list[str]
    vocabulary_size: int
    dimension: int
    combiner: str
    entries: int
    num_oov_buckets: int
    dimension_source: str


@dataclasses.dataclass
class FeaturePlan:
    """One embedded feature.

    Attributes:
      name: the feature.
      table: its table.
      type: categorical, sequence or bag.
      max_sequence_length: L for a sequence, 0 otherwise (a bag is pooled in the lookup, as
        a categorical is).
      max_ids: for a bag, the most ids a row keeps (`common.statistics.bag_cap`); 0 otherwise.
      truncate: which end of a longer sequence survives.
      length_source: "coverage" (measured) or "config" (fixed by the user).
      padding_efficiency, truncated_fraction, dropped_id_fraction: the cost of L.
      longest: the longest sequence seen, and the same figures at L = longest.
    """

    name: str
    table: str
    type: str
    max_sequence_length: int = 0
    truncate: str = "keep_last"
    length_source: str = ""
    padding_efficiency: float = 1.0
    truncated_fraction: float = 0.0
    dropped_id_fraction: float = 0.0
    longest: int = 0
    longest_padding_efficiency: float = 1.0
    max_ids: int = 0


@dataclasses.dataclass
class EmbeddingPlan:
    """The whole plan; `to_dict` is the embedding_plan.json contract.

    Attributes:
      capacity: what the tables need on a TPU, written by the planner (see
        `embedding.capacity.capacity`): per table `rows`, `dimension`, `weight_bytes`,
        `slot_bytes`, `total_bytes`; per embedded feature the `sequence_bytes` and
        `pooled_bytes` a step moves at `batch_size`; per TPU slice the bytes per core and
        whether they fit; `smallest_fit`, the smallest slice that holds the tables. Empty in
        a plan written before it existed.
    """

    tables: dict[str, TablePlan]
    features: dict[str, FeaturePlan]
    dropped: dict[str, str]
    numeric_features: list[str]
    label: dict[str, str]
    length_coverage: float
    notes: list[str]
    capacity: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tables": {k: dataclasses.asdict(v) for k, v in self.tables.items()},
            "features": {k: dataclasses.asdict(v) for k, v in self.features.items()},
            "dropped": dict(self.dropped),
            "numeric_features": list(self.numeric_features),
            "label": dict(self.label),
            "length_coverage": self.length_coverage,
            "notes": list(self.notes),
            "capacity": dict(self.capacity),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbeddingPlan:
        return cls(
            tables={k: TablePlan(**v) for k, v in data["tables"].items()},
            features={k: FeaturePlan(**v) for k, v in data["features"].items()},
            dropped=dict(data["dropped"]),
            numeric_features=list(data["numeric_features"]),
            label=dict(data["label"]),
            length_coverage=float(data["length_coverage"]),
            notes=list(data.get("notes", [])),
            capacity=dict(data.get("capacity", {})),
        )

    def sequence_lengths(self) -> dict[str, int]:
        """Sequence feature -> its max_sequence_length."""
        return {
            name: f.max_sequence_length for name, f in self.features.items() if f.type == "sequence"
        }


def read_plan(directory: str) -> EmbeddingPlan | None:
    """The plan in `directory`/embedding_plan.json, or None if there is none."""
    if not artifacts.exists(artifacts.join(directory, artifacts.PLAN)):
        return None
    return EmbeddingPlan.from_dict(artifacts.read_json(directory, artifacts.PLAN))


def write_plan(directory: str, plan: EmbeddingPlan) -> str:
    """Writes the plan as `directory`/embedding_plan.json; returns the path."""
    return artifacts.write_json(directory, artifacts.PLAN, plan.to_dict())
