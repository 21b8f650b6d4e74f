"""The embedding plan: the contract between the planner, the TPU columns and the trainer.

`EmbeddingPlan.to_dict` is the `embedding_plan.json` format; the planner (`embedding.planner`)
writes it into the pipeline's OUTPUT, the trainer reads it from there and copies it beside its
checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from common import artifacts
from common.config import COMBINERS, LABEL_TYPES, TRUNCATE_MODES

PLAN_NAME = artifacts.PLAN
EMBEDDED_TYPES = ("categorical", "sequence", "bag")
DIMENSION_SOURCES = ("auto", "config", "override")
_PLAN_KEYS = ("tables", "features", "dropped", "numeric_features", "label", "length_coverage")
_PLAN_OPTIONAL = ("notes", "capacity")


class PlanFileError(artifacts.PipelineOutputError):
    """An embedding_plan.json that is not a valid plan; the message names the field."""


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
    def from_dict(cls, data: Any, source: str = PLAN_NAME) -> EmbeddingPlan:
        """The plan `data` describes, checked: see `validate`.

        Raises:
          PlanFileError: one line naming `source` and the field that is wrong.
        """
        _check_keys(data, _PLAN_KEYS, _PLAN_OPTIONAL, source, "")
        tables, features = data["tables"], data["features"]
        for where, value in (("tables", tables), ("features", features)):
            if not isinstance(value, dict):
                raise PlanFileError(f"{source}: {where} must be an object")
        for name, table in tables.items():
            _check_keys(table, _fields(TablePlan), (), source, f"tables.{name}")
        for name, feature in features.items():
            _check_keys(
                feature, ("name", "table", "type"), _fields(FeaturePlan), source, f"features.{name}"
            )
        plan = cls(
            tables={k: TablePlan(**v) for k, v in tables.items()},
            features={k: FeaturePlan(**v) for k, v in features.items()},
            dropped=data["dropped"],
            numeric_features=data["numeric_features"],
            label=data["label"],
            length_coverage=data["length_coverage"],
            notes=data.get("notes", []),
            capacity=data.get("capacity", {}),
        )
        plan.validate(source)
        return plan

    def validate(self, source: str = PLAN_NAME) -> None:
        """Checks types, ranges and references between the plan's parts.

        A plan is read back from a file a user may edit: a sequence length of 0 would train
        without the history, a table smaller than its vocabulary would map real ids to OOV,
        a combiner TensorFlow does not know would fail deep inside the model. Each is one
        line here, before the trainer writes anything.

        Raises:
          PlanFileError: naming `source` and the field.
        """

        def fail(where: str, what: str) -> None:
            raise PlanFileError(
                f"{source}: {where} {what}; rerun `python -m embedding "
                "--pipeline-output OUTPUT` or fix the value"
            )

        if not isinstance(self.dropped, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.dropped.items()
        ):
            fail("dropped", "must map feature names to reasons")
        if not isinstance(self.numeric_features, list) or not all(
            isinstance(n, str) and n for n in self.numeric_features
        ):
            fail("numeric_features", "must be a list of feature names")
        if not isinstance(self.notes, list) or not isinstance(self.capacity, dict):
            fail("notes/capacity", "must be a list and an object")
        if not isinstance(self.label, dict) or set(self.label) != {"name", "type"}:
            fail("label", 'must be {"name": ..., "type": ...}')
        if not isinstance(self.label["name"], str) or not self.label["name"]:
            fail("label.name", "must be a non-empty string")
        _one_of(self.label["type"], LABEL_TYPES, "label.type", fail)
        if not _number(self.length_coverage) or not 0.0 < self.length_coverage <= 1.0:
            fail("length_coverage", f"must be in (0, 1], got {self.length_coverage!r}")
        for part in ("tables", "features"):
            for name, item in getattr(self, part).items():
                _check_field_types(item, f"{part}.{name}", fail)
        for name, f in self.features.items():
            at = f"features.{name}"
            if f.name != name:
                fail(f"{at}.name", f"is {f.name!r}, not its key {name!r}")
            if f.table not in self.tables:
                fail(f"{at}.table", f"names {f.table!r}, which is not in tables")
            _one_of(f.type, EMBEDDED_TYPES, f"{at}.type", fail)
            _one_of(f.truncate, TRUNCATE_MODES, f"{at}.truncate", fail)
            for field in ("max_sequence_length", "max_ids", "longest"):
                if not _integer(getattr(f, field)) or getattr(f, field) < 0:
                    fail(f"{at}.{field}", f"must be an integer >= 0, got {getattr(f, field)!r}")
            if (f.type == "sequence") != (f.max_sequence_length > 0):
                fail(
                    f"{at}.max_sequence_length",
                    f"is {f.max_sequence_length}: a sequence needs a length >= 1, other types 0",
                )
            if (f.type == "bag") != (f.max_ids > 0):
                fail(f"{at}.max_ids", f"is {f.max_ids}: a bag needs >= 1, other types 0")
            for field in (
                "padding_efficiency",
                "truncated_fraction",
                "dropped_id_fraction",
                "longest_padding_efficiency",
            ):
                value = getattr(f, field)
                if not _number(value) or not 0.0 <= value <= 1.0:
                    fail(f"{at}.{field}", f"must be a fraction in [0, 1], got {value!r}")
        for name, t in self.tables.items():
            at = f"tables.{name}"
            if t.name != name:
                fail(f"{at}.name", f"is {t.name!r}, not its key {name!r}")
            for field in ("vocabulary_size", "dimension", "entries"):
                if not _integer(getattr(t, field)) or getattr(t, field) < 1:
                    fail(f"{at}.{field}", f"must be an integer >= 1, got {getattr(t, field)!r}")
            if not _integer(t.num_oov_buckets) or t.num_oov_buckets < 0:
                fail(f"{at}.num_oov_buckets", f"must be an integer >= 0, got {t.num_oov_buckets!r}")
            if t.vocabulary_size != t.entries + t.num_oov_buckets:
                fail(
                    f"{at}.vocabulary_size",
                    f"is {t.vocabulary_size}, not entries + num_oov_buckets = "
                    f"{t.entries} + {t.num_oov_buckets}",
                )
            _one_of(t.combiner, COMBINERS, f"{at}.combiner", fail)
            _one_of(t.dimension_source, DIMENSION_SOURCES, f"{at}.dimension_source", fail)
            if (
                not isinstance(t.features, list)
                or not all(isinstance(f, str) for f in t.features)
                or sorted(t.features)
                != sorted(f for f, p in self.features.items() if p.table == name)
            ):
                fail(f"{at}.features", "must list exactly the features whose table it is")
        both = set(self.features) & set(self.numeric_features)
        if both or self.label["name"] in set(self.features) | set(self.numeric_features):
            fail(
                "features", f"and numeric_features and label overlap: {sorted(both) or self.label}"
            )

    def sequence_lengths(self) -> dict[str, int]:
        """Sequence feature -> its max_sequence_length."""
        return {
            name: f.max_sequence_length for name, f in self.features.items() if f.type == "sequence"
        }


def read_plan(directory: str) -> EmbeddingPlan | None:
    """The plan in `directory`/embedding_plan.json, checked, or None if there is none.

    Raises:
      PlanFileError: the file is not JSON or not a valid plan (one line naming the field).
    """
    path = artifacts.join(directory, artifacts.PLAN)
    if not artifacts.exists(path):
        return None
    try:
        data = json.loads(artifacts.read_text(directory, artifacts.PLAN))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise PlanFileError(
            f"{path} is not valid JSON ({e}); rerun `python -m embedding --pipeline-output "
            "OUTPUT` to write it again"
        ) from None
    return EmbeddingPlan.from_dict(data, source=path)


def write_plan(directory: str, plan: EmbeddingPlan) -> str:
    """Writes the plan as `directory`/embedding_plan.json; returns the path."""
    plan.validate()
    return artifacts.write_json(directory, artifacts.PLAN, plan.to_dict())


def _fields(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _check_keys(
    value: Any, required: tuple[str, ...], optional: tuple[str, ...], source: str, where: str
) -> None:
    at = where or "the plan"
    if not isinstance(value, dict):
        raise PlanFileError(f"{source}: {at} must be a JSON object")
    missing = [k for k in required if k not in value]
    unknown = sorted(set(value) - set(required) - set(optional))
    if missing:
        raise PlanFileError(f"{source}: {at} lacks {', '.join(missing)}")
    if unknown:
        raise PlanFileError(f"{source}: {at} has unknown key(s) {', '.join(unknown)}")


_TYPE_CHECKS = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (lambda v: _integer(v), "an integer"),
    "float": (lambda v: _number(v), "a finite number"),
    "list[str]": (
        lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "a list of names",
    ),
}


def _check_field_types(item: Any, where: str, fail) -> None:
    """Each field of a table or feature plan has its declared type (JSON may hold anything)."""
    for field in dataclasses.fields(item):
        check, what = _TYPE_CHECKS[field.type]
        if not check(getattr(item, field.name)):
            fail(f"{where}.{field.name}", f"must be {what}, got {getattr(item, field.name)!r}")


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _one_of(value: Any, allowed: tuple[str, ...], where: str, fail) -> None:
    if value not in allowed:
        fail(where, f"is {value!r}; one of {', '.join(allowed)}")
