"""A plan read back from embedding_plan.json is checked before anything trusts it.

The plan is a file a user may edit: every hand edit is either refused with one line that
names the field, or a valid plan whose differences from the measured plan are listed.
"""

from __future__ import annotations

import copy
import json
import random

import pytest

from common.plan import EmbeddingPlan, PlanFileError, read_plan, write_plan
from embedding.planner import make_plan
from tests.test_planner import config, stats
from trainer.checks import TrainerError, check_plan_matches_config, plan_edits


def _plan_dict() -> dict:
    return json.loads(json.dumps(make_plan(stats(), config()).to_dict()))


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["features"]["history"].update(max_sequence_length=-5), "max_sequence_length"),
        (lambda d: d["features"]["history"].update(max_sequence_length=0), "max_sequence_length"),
        (lambda d: d["features"]["item_id"].update(max_sequence_length=3), "max_sequence_length"),
        (lambda d: d["tables"]["items"].update(entries=10), "vocabulary_size"),
        (lambda d: d["tables"]["items"].update(dimension=0), "dimension"),
        (lambda d: d["tables"]["items"].update(dimension=16.5), "dimension"),
        (lambda d: d["tables"]["items"].update(dimension=True), "dimension"),
        (lambda d: d["tables"]["items"].update(combiner="max"), "combiner"),
        (lambda d: d["features"]["history"].update(truncate="middle"), "truncate"),
        (lambda d: d["features"]["history"].update(type="bag"), "features.history"),
        (lambda d: d["features"]["history"].update(table="nope"), "features.history.table"),
        (lambda d: d["tables"].pop("device"), "features.device.table"),
        (lambda d: d["tables"]["items"]["features"].pop(), "tables.items.features"),
        (lambda d: d["label"].update(type="multiclass"), "label.type"),
        (lambda d: d.pop("label"), "lacks label"),
        (lambda d: d["tables"]["items"].update(colour="red"), "unknown key"),
        (lambda d: d.update(length_coverage=float("nan")), "length_coverage"),
    ],
)
def test_an_invalid_edit_is_one_line_naming_the_field(tmp_path, edit, field):
    data = _plan_dict()
    edit(data)
    (tmp_path / "embedding_plan.json").write_text(json.dumps(data))
    with pytest.raises(PlanFileError, match=field) as raised:
        read_plan(str(tmp_path))
    assert "\n" not in str(raised.value) and "embedding_plan.json" in str(raised.value)


def test_truncated_json_is_one_line(tmp_path):
    text = json.dumps(_plan_dict())
    (tmp_path / "embedding_plan.json").write_text(text[: len(text) // 2])
    with pytest.raises(PlanFileError, match="not valid JSON"):
        read_plan(str(tmp_path))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["label"].update(type="regression"), "label is"),
        (lambda d: d["tables"]["device"].update(num_oov_buckets=1, vocabulary_size=4), "oov"),
        (lambda d: d["features"]["device"].update(type="sequence", max_sequence_length=3), "type"),
    ],
)
def test_a_valid_plan_that_contradicts_the_config_is_refused(edit, message):
    data = _plan_dict()
    edit(data)
    plan = EmbeddingPlan.from_dict(data)
    with pytest.raises(TrainerError, match=f"(?i){message}"):
        check_plan_matches_config(config(), plan)


def test_a_chosen_dimension_or_length_is_valid_and_reported(tmp_path):
    measured = make_plan(stats(), config())
    data = _plan_dict()
    data["tables"]["items"]["dimension"] = 40
    data["features"]["history"]["max_sequence_length"] = 7
    (tmp_path / "embedding_plan.json").write_text(json.dumps(data))
    plan = read_plan(str(tmp_path))
    check_plan_matches_config(config(), plan)
    assert plan_edits(plan, measured) == [
        f"tables.items.dimension 40 (measured plan: {measured.tables['items'].dimension})",
        "features.history.max_sequence_length 7 (measured plan: 5)",
    ]
    assert plan_edits(measured, measured) == []


_JUNK = [-1, 0, 1, 2, 10**12, 0.5, -0.5, 1.5, float("inf"), None, True, "", "x", "mean", [], {}]


def test_random_hand_edits_are_refused_or_valid_and_reported(tmp_path):
    """A property: any one-field edit is refused with one line, or gives a plan the model can
    be built from (every check passes) whose edits, if any, are listed."""
    rng = random.Random(7)
    base = _plan_dict()
    measured = make_plan(stats(), config())
    leaves = []

    def walk(value, path):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, (*path, i))
        else:
            leaves.append(path)

    walk({k: v for k, v in base.items() if k not in ("notes", "capacity")}, ())
    outcomes = {"refused": 0, "accepted": 0}
    for trial in range(400):
        data = copy.deepcopy(base)
        path = leaves[rng.randrange(len(leaves))]
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = rng.choice(_JUNK)
        (tmp_path / "embedding_plan.json").write_text(json.dumps(data))
        try:
            plan = read_plan(str(tmp_path))
            check_plan_matches_config(config(), plan)
        except (PlanFileError, TrainerError) as e:
            assert "\n" not in str(e), (path, str(e))
            outcomes["refused"] += 1
            continue
        outcomes["accepted"] += 1
        plan.validate()
        for t in plan.tables.values():
            assert t.vocabulary_size == t.entries + t.num_oov_buckets >= 1 and t.dimension >= 1
        for f in plan.features.values():
            assert (f.max_sequence_length >= 1) == (f.type == "sequence")
        edits = plan_edits(plan, measured)
        changed = (
            path[0] in ("tables", "features")
            and path[-1]
            in (
                "dimension",
                "combiner",
                "max_sequence_length",
                "max_ids",
            )
            and data[path[0]][path[1]][path[2]] != base[path[0]][path[1]][path[2]]
        )
        assert bool(edits) == changed, (trial, path, edits)
    assert outcomes["refused"] > 100 and outcomes["accepted"] > 10, outcomes


def test_write_plan_refuses_an_invalid_plan(tmp_path):
    plan = make_plan(stats(), config())
    plan.tables["items"].dimension = 0
    with pytest.raises(PlanFileError, match="dimension"):
        write_plan(str(tmp_path), plan)
    assert not (tmp_path / "embedding_plan.json").exists()
