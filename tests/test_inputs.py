"""prepare_features: the ids training parses and the ids serving computes are the same, and
truncation keeps the planned end of every sequence."""

from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from trainer.inputs import keep_and_truncate, prepare_features
from trainer.model import oov_rows

pytestmark = pytest.mark.trainer_env


def _plan(length=3, end="keep_last"):
    return SimpleNamespace(
        features={
            "item_id": SimpleNamespace(type="categorical", max_sequence_length=None, truncate=None),
            "history": SimpleNamespace(type="sequence", max_sequence_length=length, truncate=end),
        },
        numeric_features=["price"],
    )


def _parsed(rows):
    """Rows of ids as parse_example gives a VarLenFeature: row-major, positions from 0."""
    indices = [[r, p] for r, row in enumerate(rows) for p in range(len(row))]
    values = [v for row in rows for v in row]
    width = max((len(row) for row in rows), default=0)
    return tf.SparseTensor(
        tf.constant(indices, tf.int64, shape=[len(indices), 2]),
        tf.constant(values, tf.int64),
        [len(rows), width],
    )


def _rows(sparse, batch):
    rows = [[] for _ in range(batch)]
    for (r, p), v in zip(sparse.indices.numpy(), sparse.values.numpy(), strict=True):
        assert p == len(rows[r]), "positions must run 0, 1, ... within a row"
        rows[r].append(int(v))
    return rows


def test_serving_keeps_categorical_id_zero_like_training():
    ids = [0, 3, -1, 0]  # 0 is the most frequent value's id; -1 is out of vocabulary
    features = {"history": _parsed([[1], [], [2], [0]]), "price": tf.constant([1.0] * 4)}
    serving = prepare_features({**features, "item_id": tf.constant(ids, tf.int64)}, _plan())
    training = prepare_features({**features, "item_id": _parsed([[i] for i in ids])}, _plan())
    for prepared in (serving, training):
        assert _rows(prepared["item_id"], 4) == [[0], [3], [], [0]]
        assert prepared["item_id"].dense_shape.numpy().tolist() == [4, 1]


@pytest.mark.parametrize("end", ["keep_first", "keep_last"])
def test_truncation_and_dropped_ids_against_a_reference(end):
    rng = np.random.default_rng(7)
    rows = [list(rng.integers(-1, 9, size=rng.integers(0, 8))) for _ in range(200)]
    length = 3
    prepared = keep_and_truncate(
        _parsed(rows), tf.math.greater_equal(_parsed(rows).values, 0), length, end
    )
    kept = [[v for v in row if v >= 0] for row in rows]
    expected = [row[:length] if end == "keep_first" else row[-length:] for row in kept]
    assert _rows(prepared, len(rows)) == expected
    width = max(len(row) for row in expected)
    assert prepared.dense_shape.numpy().tolist() == [len(rows), width]


def test_an_empty_batch():
    prepared = keep_and_truncate(_parsed([[], []]), tf.zeros([0], tf.bool), 4, "keep_last")
    assert prepared.values.shape[0] == 0
    assert prepared.dense_shape.numpy().tolist() == [2, 0]


def test_a_bag_keeps_its_ids_up_to_the_planned_cap_only():
    plan = SimpleNamespace(
        features={
            "genres": SimpleNamespace(type="bag", max_sequence_length=0, max_ids=3, truncate="x")
        },
        numeric_features=[],
    )
    rows = [[4, 1, -1, 2, 7], [], [5], [3, 3]]
    prepared = prepare_features({"genres": _parsed(rows)}, plan)
    assert _rows(prepared["genres"], 4) == [[4, 1, 2], [], [5], [3, 3]]


def _oov_plan():
    plan = _plan()
    plan.features["item_id"].table = "items"
    plan.features["history"].table = "items"
    plan.tables = {"items": SimpleNamespace(entries=9, num_oov_buckets=2)}
    return plan


def test_training_sends_a_share_of_categorical_ids_to_the_oov_buckets():
    rng = np.random.default_rng(1)
    ids = [[int(i)] for i in rng.integers(0, 9, size=4000)]
    history = [[1, 2]] * 4000
    features = {"item_id": _parsed(ids), "history": _parsed(history), "price": tf.zeros([4000])}
    prepared = prepare_features(features, _oov_plan(), oov_share=0.1, seed=3)

    got = _rows(prepared["item_id"], 4000)
    replaced = [(row[0], new[0]) for row, new in zip(ids, got, strict=True) if row != new]
    assert 300 < len(replaced) < 500, "about a tenth of the ids"
    # Each lands in the OOV bucket its id hashes to (9 + id % 2), the same one every time.
    assert all(new == 9 + old % 2 for old, new in replaced)
    assert {new for _, new in replaced} == {9, 10}
    assert _rows(prepared["history"], 4000) == history, "sequences are left alone"
    untouched = prepare_features(features, _oov_plan())
    assert _rows(untouched["item_id"], 4000) == ids


def test_bias_keys_carry_the_categorical_ids():
    features = {
        "item_id": tf.constant([4, -1, 0], tf.int64),
        "history": _parsed([[1], [], [2]]),
        "price": tf.zeros([3]),
    }
    prepared = prepare_features(features, _oov_plan(), id_bias=True)
    assert _rows(prepared["item_id__bias"], 3) == [[4], [], [0]]
    assert "history__bias" not in prepared
    assert "item_id__bias" not in prepare_features(features, _oov_plan())


def test_numeric_z_scores_are_clipped_for_training_and_serving_alike():
    plan = SimpleNamespace(features={}, numeric_features=["price"])
    prepared = prepare_features({"price": tf.constant([0.5, -1e3, 1e6, 5.0])}, plan)
    np.testing.assert_array_equal(prepared["price"].numpy(), [0.5, -5.0, 5.0, 5.0])


def test_the_split_key_is_read_through_its_bias_key_only():
    features = {
        "item_id": tf.constant([4, 1, 0], tf.int64),
        "history": _parsed([[1], [], [2]]),
        "price": tf.zeros([3]),
    }
    prepared = prepare_features(features, _oov_plan(), id_bias=True, key_features=["item_id"])
    assert _rows(prepared["item_id__bias"], 3) == [[4], [1], [0]]
    assert "item_id" not in prepared
    without_bias = prepare_features(features, _oov_plan(), key_features=["item_id"])
    assert "item_id" not in without_bias and "item_id__bias" not in without_bias


def test_sequence_dropout_leaves_out_a_share_of_each_history_in_order():
    history = [list(range(50))] * 200
    features = {
        "item_id": _parsed([[1]] * 200),
        "history": _parsed(history),
        "price": tf.zeros([200]),
    }
    plan = _oov_plan()
    plan.features["history"].max_sequence_length = 50
    prepared = prepare_features(features, plan, sequence_dropout=0.3, seed=5)
    rows = _rows(prepared["history"], 200)
    kept = sum(len(r) for r in rows) / (50 * 200)
    assert 0.65 < kept < 0.75, kept
    assert all(r == sorted(r) and set(r) <= set(range(50)) for r in rows), "order is kept"
    assert len({tuple(r) for r in rows}) > 190, "a new draw for every row"
    assert _rows(prepared["item_id"], 200) == [[1]] * 200, "categorical ids are left alone"
    assert _rows(prepare_features(features, plan)["history"], 200) == history


def test_a_value_out_of_a_vocabulary_without_oov_buckets_is_an_unseen_row():
    # A vocabulary of 3 entries: ids 3 and 4 are OOV buckets; -1 is a value outside a
    # vocabulary without buckets, which prepare_features drops, leaving the row empty.
    features = {"history": _parsed([[1]] * 5), "price": tf.constant([1.0] * 5)}
    for ids, unseen in (([0, 3, -1, 2, 4], [0, 1, 1, 0, 1]), ([-1, -1, 0, 1, 2], [1, 1, 0, 0, 0])):
        for item in (tf.constant(ids, tf.int64), _parsed([[i] for i in ids])):
            prepared = prepare_features({**features, "item_id": item}, _plan())
            assert oov_rows(prepared["item_id"], 3).numpy().tolist() == unseen
