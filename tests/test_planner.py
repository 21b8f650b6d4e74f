import json
import time

import pytest

from common.config import parse_config
from common.plan import EmbeddingPlan
from embedding.planner import PlanError, auto_dimension, format_plan, make_plan


def config(**overrides):
    data = {
        "split": {"key": "user_id"},
        "label": {"name": "clicked"},
        "feature": [
            {"name": "item_id", "type": "categorical", "vocabulary": "items"},
            {"name": "history", "type": "sequence", "vocabulary": "items"},
            {"name": "device", "type": "categorical"},
            {"name": "user_id", "type": "categorical"},
            {"name": "price", "type": "numeric"},
        ],
        "vocabulary": {"num_oov_buckets": 2},
    }
    data.update(overrides)
    return parse_config(data)


def vocab(size, distinct=None, features=()):
    return {
        "features": list(features),
        "size": size,
        "num_oov_buckets": 2,
        "distinct_values": size if distinct is None else distinct,
        "tokens": 10 * size,
        "oov_rate": 0.0,
    }


def sequence(histogram):
    lengths = [int(k) for k, v in histogram.items() if v]
    return {"histogram": histogram, "max": max(lengths) if lengths else 0}


def stats(history=None, device_size=3, user_distinct=60, rows=100):
    return {
        "rows": {"read": rows, "train": rows, "eval": 0, "rejected": 0},
        "vocabularies": {
            "items": vocab(5000),
            "device": vocab(device_size),
            "user_id": vocab(user_distinct, user_distinct),
        },
        "sequences": {
            "history": sequence(history or {"0": 10, "5": 85, "40": 4, "400": 1}),
        },
    }


def test_shared_table_sizes_are_entries_plus_oov_as_ints():
    plan = make_plan(stats(), config())
    items = plan.tables["items"]
    assert items.features == ["history", "item_id"]
    assert items.vocabulary_size == 5002
    assert type(items.vocabulary_size) is int and type(items.dimension) is int
    assert plan.features["item_id"].table == "items"
    assert plan.features["item_id"].max_sequence_length == 0
    assert plan.numeric_features == ["price"]


def test_length_from_coverage_exactly_met():
    # 95 of 100 sequences are <= 5 long.
    plan = make_plan(stats(), config())
    history = plan.features["history"]
    assert history.max_sequence_length == 5
    assert history.length_source == "coverage"
    assert history.truncated_fraction == pytest.approx(0.05)
    # kept ids: 85*5 + 4*5 + 1*5 = 450 of 85*5 + 160 + 400 = 985
    assert history.dropped_id_fraction == pytest.approx(1 - 450 / 985)
    assert history.padding_efficiency == pytest.approx(450 / (100 * 5))
    assert history.longest == 400
    assert history.longest_padding_efficiency == pytest.approx(985 / (100 * 400))
    assert (
        make_plan(stats(), config(), length_coverage=0.96).features["history"].max_sequence_length
        == 40
    )


def test_config_length_override_wins():
    cfg = config(
        feature=[
            {"name": "item_id", "type": "categorical", "vocabulary": "items"},
            {
                "name": "history",
                "type": "sequence",
                "vocabulary": "items",
                "max_sequence_length": 50,
                "truncate": "keep_first",
            },
        ]
    )
    plan = make_plan(stats(), cfg)
    assert plan.features["history"].max_sequence_length == 50
    assert plan.features["history"].length_source == "config"
    assert plan.features["history"].truncate == "keep_first"


def test_empty_only_sequence_is_dropped_and_table_keeps_the_rest():
    plan = make_plan(stats(history={"0": 100}), config())
    assert "history" not in plan.features
    assert "empty" in plan.dropped["history"]
    assert plan.tables["items"].features == ["item_id"]


def test_one_value_vocabulary_is_dropped():
    plan = make_plan(stats(device_size=1), config())
    assert "device" not in plan.tables
    assert plan.dropped["device"] == (
        "vocabulary 'device' has 1 value after top_k and frequency_threshold and no training "
        "token outside it: a constant carries no information"
    )


def test_one_kept_value_with_tokens_outside_it_is_two_ids_not_a_constant():
    # top_k = 1 over "mobile" (60%) and the rest (40%): the value against the OOV bucket.
    measured = stats()
    measured["vocabularies"]["device"] = {**vocab(1, 3), "oov_rate": 0.4}
    plan = make_plan(measured, config())
    assert "device" not in plan.dropped
    assert plan.tables["device"].entries == 1 and plan.tables["device"].num_oov_buckets == 2
    without_buckets = config(vocabulary={"num_oov_buckets": 0})
    assert "constant" in make_plan(measured, without_buckets).dropped["device"]


@pytest.mark.parametrize(
    "distinct, reason",
    [
        (
            40,
            "vocabulary 'device' keeps no value: none of its 40 distinct training values "
            "occurs frequency_threshold (1,000) times",
        ),
        (0, "vocabulary 'device' has no value in the training split"),
    ],
)
def test_an_empty_vocabulary_is_dropped_saying_why(distinct, reason):
    measured = stats()
    measured["vocabularies"]["device"] = vocab(0, distinct)
    plan = make_plan(measured, config(vocabulary={"device": {"frequency_threshold": 1000}}))
    assert "device" not in plan.tables
    assert plan.dropped["device"] == reason


def test_id_like_feature_is_flagged():
    plan = make_plan(stats(user_distinct=90, rows=100), config())
    assert any(note.startswith("user_id:") and "id-like" in note for note in plan.notes)
    assert not any("id-like" in note for note in make_plan(stats(user_distinct=20), config()).notes)


def test_dimension_rules():
    assert auto_dimension(4) == 8
    assert auto_dimension(5000) == 48
    assert auto_dimension(10**6) == 192
    assert auto_dimension(10**12) == 512
    plan = make_plan(stats(), config(vocabulary={"items": {"dimension": 20}}))
    assert plan.tables["items"].dimension == 20
    assert plan.tables["items"].dimension_source == "config"
    assert plan.tables["device"].dimension_source == "auto"
    assert make_plan(stats(), config(embedding={"dimension": 24})).tables["device"].dimension == 24
    overridden = make_plan(stats(), config(), dimension=16)
    assert {t.dimension for t in overridden.tables.values()} == {16}
    with pytest.raises(PlanError, match="dimension must be > 0"):
        make_plan(stats(), config(), dimension=0)


def test_missing_vocabulary_in_stats_is_a_clear_error():
    broken = stats()
    del broken["vocabularies"]["device"]
    with pytest.raises(PlanError, match="no vocabulary 'device'"):
        make_plan(broken, config())


def test_plan_round_trips_through_json_and_prints():
    plan = make_plan(stats(), config())
    data = json.loads(json.dumps(plan.to_dict()))
    assert set(data) >= {"tables", "features", "dropped"}
    assert set(data["tables"]["items"]) >= {"features", "vocabulary_size", "dimension", "combiner"}
    assert set(data["features"]["history"]) >= {
        "table",
        "max_sequence_length",
        "truncate",
        "padding_efficiency",
        "truncated_fraction",
    }
    assert EmbeddingPlan.from_dict(data) == plan
    text = format_plan(plan)
    assert "history, item_id  (shared)" in text
    assert "5,002" in text


def test_planning_takes_milliseconds():
    started = time.perf_counter()
    for _ in range(100):
        make_plan(stats(), config())
    assert (time.perf_counter() - started) / 100 < 0.01


def _overlap(shared, share_a, share_b, correlation):
    return {
        "vocabularies": ["clicked_items", "items"],
        "shared_values": shared,
        "token_share_a": share_a,
        "token_share_b": share_b,
        "log_frequency_correlation": correlation,
    }


@pytest.mark.parametrize(
    ("overlap", "suggested"),
    [
        (_overlap(200, 0.9, 0.8, 0.7), True),
        (_overlap(200, 1.0, 0.4, 0.9), False),  # ages 1..60 among item ids: few item tokens
        (_overlap(200, 0.9, 0.8, 0.1), False),  # user ids among item ids: no agreement
        (_overlap(5, 0.9, 0.8, 0.9), False),  # too few shared values to judge
        ({"vocabularies": ["clicked_items", "items"], "shared_values": 400}, False),  # old stats
    ],
)
def test_sharing_is_suggested_on_token_and_frequency_evidence(overlap, suggested):
    measured = stats()
    measured["vocabularies"]["clicked_items"] = vocab(400, 400)
    measured["sequences"]["clicked_items"] = sequence({"3": 10})
    measured["vocabulary_overlaps"] = [overlap]
    cfg = config(
        feature=[
            {"name": "item_id", "type": "categorical", "vocabulary": "items"},
            {"name": "clicked_items", "type": "sequence"},
        ]
    )
    notes = [n for n in make_plan(measured, cfg).notes if "same things" in n]
    assert bool(notes) == suggested
    if suggested:
        assert "'clicked_items' and 'items'" in notes[0] and "90% of 'clicked_items'" in notes[0]


def _with_eval(measured, feature, tokens, unseen_rate):
    skew = measured.setdefault("eval_skew", {"features": {}, "lengths": {}})
    skew["features"][feature] = {"tokens": tokens, "unseen_rate": unseen_rate, "oov_rate": 0.0}
    return measured


def test_a_feature_whose_eval_values_training_never_saw_is_dropped_with_its_reason():
    measured = _with_eval(stats(), "user_id", 50, 1.0)
    _with_eval(measured, "item_id", 50, 0.3)
    # Rows split by another column: user_id is a feature like any other.
    by_session = {"key": "session_id"}
    plan = make_plan(measured, config(split=by_session))
    assert "user_id" not in plan.features and "user_id" not in plan.tables
    assert plan.dropped["user_id"].startswith("100.0% of its 50 eval values never occur")
    assert "keep = true" in plan.dropped["user_id"]
    assert "item_id" in plan.features
    assert "user_id: " in format_plan(plan)
    # Kept on request, with a note; and not judged on too few eval tokens.
    kept = config(
        split=by_session,
        feature=[{"name": "user_id", "type": "categorical", "keep": True}, *config_features()],
    )
    plan = make_plan(measured, kept)
    assert "user_id" in plan.features
    assert any(n.startswith("user_id: kept (keep = true) although 100.0%") for n in plan.notes)
    few = _with_eval(stats(), "user_id", 9, 1.0)
    assert "user_id" in make_plan(few, config(split=by_session)).features


def test_the_split_key_listed_as_a_feature_is_kept_for_its_training_only_term():
    measured = _with_eval(stats(), "user_id", 50, 1.0)
    plan = make_plan(measured, config())
    assert "user_id" in plan.features and "user_id" not in plan.dropped
    (note,) = [n for n in plan.notes if n.startswith("user_id: the split key")]
    assert "per-id bias" in note


def config_features():
    return [{"name": "item_id", "type": "categorical", "vocabulary": "items"}]


def test_a_bag_keeps_all_ids_up_to_a_generous_cap_and_is_pooled():
    cfg = config(
        feature=[
            {"name": "item_id", "type": "categorical", "vocabulary": "items"},
            {"name": "genres", "type": "bag", "vocabulary": "items"},
        ]
    )
    measured = stats()
    measured["bags"] = {"genres": sequence({"1": 500, "3": 400, "6": 100})}
    genres = make_plan(measured, cfg).features["genres"]
    assert (genres.type, genres.max_sequence_length, genres.max_ids) == ("bag", 0, 6)
    assert genres.dropped_id_fraction == 0.0
    # One outlier far beyond the 99.9% quantile does not set the cap for every batch.
    measured["bags"] = {"genres": sequence({"1": 5000, "3": 4000, "6": 1000, "500": 1})}
    genres = make_plan(measured, cfg).features["genres"]
    assert genres.max_ids == 24 and genres.longest == 500
    assert genres.dropped_id_fraction == pytest.approx(476 / (5000 + 12000 + 6000 + 500))
    assert "genres" in format_plan(make_plan(measured, cfg))
    measured["bags"] = {"genres": sequence({"0": 10})}
    assert make_plan(measured, cfg).dropped["genres"] == "every training bag is empty"


def test_the_plan_says_how_a_sequence_is_looked_up_and_points_at_bags():
    notes = make_plan(stats(), config()).notes
    (note,) = [n for n in notes if n.startswith("history:")]
    assert "pools it in the TPU lookup (max_sequence_length 0" in note
    assert "not batch x 5 x dim), on the last 5 ids a row" in note
    assert "--history-attention" in note
    assert 'type = "bag", it would keep up to 400 ids a row' in note
