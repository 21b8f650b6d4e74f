"""The plan -> TPU columns: the configs a TPU would receive, and clear errors before TF's."""

import numpy as np
import pytest

from tests.conftest import needs

# TPUEstimator is the trainer environment's: the module cannot be imported in the pipeline's.
pytest.importorskip("tensorflow_estimator", reason=needs("trainer"))

import tensorflow as tf
from tensorflow_estimator.python.estimator.tpu import _tpu_estimator_embedding

from common.config import EmbeddingConfig
from embedding.columns import (
    ColumnError,
    check_column_arguments,
    create_embedding_config_spec,
    create_feature_columns,
    optimization_parameters,
)
from embedding.planner import make_plan
from tests.test_planner import config, stats, vocab

pytestmark = pytest.mark.trainer_env


def plan():
    return make_plan(stats(), config())


def test_configs_a_tpu_would_receive():
    the_plan = plan()
    columns = create_feature_columns(the_plan)
    tables, features = _tpu_estimator_embedding.get_configs_from_feature_columns(columns.all)
    # One table per vocabulary, whatever the TPU layer calls it.
    assert len(tables) == len(the_plan.tables) == 3
    by_features = {
        tuple(sorted(f for f, c in features.items() if c.table_id == table)): config
        for table, config in tables.items()
    }
    items = by_features[("history", "item_id")]
    assert items.vocabulary_size == the_plan.tables["items"].vocabulary_size == 5002
    assert items.dimension == the_plan.tables["items"].dimension
    assert by_features[("device",)].vocabulary_size == 5
    assert features["history"].max_sequence_length == 5
    assert features["item_id"].max_sequence_length == 0
    for table in tables.values():
        assert type(table.vocabulary_size) is int and type(table.dimension) is int
        assert table.combiner == "mean"
    for feature in features.values():
        assert type(feature.max_sequence_length) is int
    assert set(columns.sequence) == {"history"}
    assert sorted(c.categorical_column.name for c in columns.dense) == [
        "device",
        "item_id",
        "user_id",
    ]


def test_embedding_config_spec_carries_the_optimizer():
    columns = create_feature_columns(plan())
    spec = create_embedding_config_spec(
        columns, EmbeddingConfig(optimizer="adam", learning_rate=0.01)
    )
    assert isinstance(spec.optimization_parameters, tf.compat.v1.tpu.experimental.AdamParameters)
    assert spec.optimization_parameters.learning_rate == 0.01
    assert len(spec.feature_columns) == 4
    clipped = optimization_parameters(
        EmbeddingConfig(optimizer="sgd", clip_weight_min=-1.0, clip_weight_max=1.0)
    )
    assert (clipped.clip_weight_min, clipped.clip_weight_max) == (-1.0, 1.0)
    assert isinstance(
        optimization_parameters(EmbeddingConfig()),
        tf.compat.v1.tpu.experimental.AdagradParameters,
    )


GOOD = {
    "table": "items",
    "features": ["history", "item_id"],
    "buckets": [10, 10],
    "is_sequence": [True, False],
    "dimension": 8,
    "max_sequence_lengths": [5, 0],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dimension": 0}, "table 'items': dimension must be a positive int"),
        ({"dimension": 8.0}, "table 'items': dimension must be a positive int"),
        ({"initializer": "zeros"}, "table 'items': initializer must be callable"),
        ({"max_sequence_lengths": [5]}, "1 max_sequence_lengths for 2 features"),
        ({"max_sequence_lengths": [5, 3]}, "feature 'item_id' is not a sequence"),
        ({"max_sequence_lengths": [0, 0]}, "feature 'history' is a sequence but its"),
        ({"buckets": [10, 11]}, "same number of buckets, got history=10, item_id=11"),
        ({"other_tables": {"clicks": ["item_id"]}}, "'item_id' is in two tables"),
    ],
)
def test_column_errors_name_the_table_or_feature(change, message):
    arguments = {**GOOD, **change}
    with pytest.raises(ColumnError, match=message.replace("(", r"\(")):
        check_column_arguments(**arguments)


def test_good_arguments_pass():
    check_column_arguments(**GOOD, initializer=tf.compat.v1.zeros_initializer())


def test_a_bag_is_pooled_by_the_tpu_lookup_with_max_sequence_length_0():
    cfg = config(
        feature=[
            {"name": "item_id", "type": "categorical", "vocabulary": "items"},
            {"name": "history", "type": "sequence", "vocabulary": "items"},
            {"name": "genres", "type": "bag"},
        ],
        embedding={"combiner": "sqrtn"},
    )
    measured = stats()
    measured["vocabularies"]["genres"] = vocab(19)
    measured["bags"] = {"genres": {"histogram": {"1": 5, "3": 4}, "max": 3}}
    the_plan = make_plan(measured, cfg)
    columns = create_feature_columns(the_plan)
    tables, features = _tpu_estimator_embedding.get_configs_from_feature_columns(columns.all)
    assert features["genres"].max_sequence_length == 0
    assert features["history"].max_sequence_length == 5
    genres_table = tables[features["genres"].table_id]
    assert genres_table.vocabulary_size == 21 and genres_table.combiner == "sqrtn"
    assert "genres" in [c.categorical_column.name for c in columns.dense]
    assert "genres" not in columns.sequence
    # The CPU path pools several ids a row with the combiner, as the TPU's lookup does.
    layer = tf.compat.v1.keras.layers.DenseFeatures(
        [c for c in columns.dense if c.categorical_column.name == "genres"]
    )
    ids = tf.SparseTensor(
        [[0, 0], [0, 1], [0, 2], [1, 0]], tf.constant([1, 2, 3, 4], tf.int64), [2, 3]
    )
    pooled = layer({"genres": ids})
    assert pooled.shape == (2, the_plan.tables["genres"].dimension)
    table = next(v for v in layer.variables if "embedding_weights" in v.name).numpy()
    expected = table[[1, 2, 3]].sum(axis=0) / np.sqrt(3)
    np.testing.assert_allclose(pooled.numpy()[0], expected, rtol=1e-5)
    np.testing.assert_allclose(pooled.numpy()[1], table[4], rtol=1e-5)


def test_bias_tables_start_at_the_given_rows_whole_or_partitioned():
    from embedding.columns import RowValues, bias_feature

    the_plan = plan()
    size = the_plan.tables["items"].vocabulary_size
    start = np.linspace(-1.0, 1.0, size).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        columns = create_feature_columns(
            the_plan, id_bias=True, bias_initial_values={"items": start}
        )
        ids = tf.SparseTensor(
            [[0, 0], [1, 0], [2, 0]], tf.constant([0, 7, size - 1], tf.int64), [3, 1]
        )
        features = {bias_feature("item_id"): ids}
        looked_up = tf.compat.v1.keras.layers.DenseFeatures([columns.bias["item_id"]])(features)
        # A TPU splits a table over its hosts: each part gets its own rows.
        parts = tf.compat.v1.get_variable(
            "split",
            shape=(size, 1),
            initializer=RowValues(start),
            partitioner=tf.compat.v1.fixed_size_partitioner(3),
        )
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            got, whole = session.run([looked_up, tf.concat(list(parts), axis=0)])
    np.testing.assert_array_equal(got[:, 0], start[[0, 7, size - 1]])
    np.testing.assert_array_equal(whole[:, 0], start)
    # Tables without given rows start at 0, as before.
    assert "device" in columns.bias


def test_the_split_key_gets_a_bias_and_no_embedding():
    the_plan = plan()
    columns = create_feature_columns(the_plan, id_bias=True, key_features=["user_id"])
    assert "user_id" not in [c.categorical_column.name for c in columns.all]
    assert "user_id" in columns.bias
    assert sorted(c.categorical_column.name for c in columns.dense) == ["device", "item_id"]
    nothing = create_feature_columns(the_plan, key_features=["user_id"])
    assert not any("user_id" in c.categorical_column.name for c in nothing.all)
