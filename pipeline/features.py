"""The raw and transformed feature specs, derived from the config in one place.

Raw record batches (what the reader produces and tf.Transform consumes) hold every column as
an Arrow list, the layout tfx_bsl's tf.Example decoder produces: categorical, sequence and bag
values as `large_list<large_binary>`, numbers as `large_list<float32>`. A categorical or
numeric column holds exactly one value a row; a sequence or a bag any number, zero included.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.tfxio import tensor_adapter, tf_example_record

from common.config import LIST_TYPES, Config


def raw_feature_spec(config: Config, with_label: bool = True) -> dict[str, tf.io.FixedLenFeature]:
    """The tf.Example spec of a raw row: what serving receives (without the label)."""
    spec: dict = {}
    for feature in config.features:
        if feature.type == "categorical":
            spec[feature.name] = tf.io.FixedLenFeature([], tf.string)
        elif feature.type in LIST_TYPES:
            spec[feature.name] = tf.io.VarLenFeature(tf.string)
        else:
            spec[feature.name] = tf.io.FixedLenFeature([], tf.float32)
    if with_label:
        spec[config.label.name] = tf.io.FixedLenFeature([], tf.float32)
    return spec


def raw_schema(config: Config):
    """The TFMD schema of raw rows (features and label)."""
    return schema_utils.schema_from_feature_spec(raw_feature_spec(config))


def tensor_adapter_config(config: Config) -> tensor_adapter.TensorAdapterConfig:
    """How tf.Transform turns raw record batches into tensors.

    It is the one tfx_bsl derives for tf.Example data with the raw schema, so batches built
    by `pipeline.decode` and batches decoded from tf.Examples are interchangeable.
    """
    return tf_example_record.TFExampleRecord(
        file_pattern="unused", schema=raw_schema(config)
    ).TensorAdapterConfig()
