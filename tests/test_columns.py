"""The plan -> TPU columns: the configs a TPU would receive, and clear errors before TF's."""

import pytest
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
from tests.test_planner import config, stats


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
