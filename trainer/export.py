"""The serving signature: serialized RAW tf.Examples in, the transform graph applied inside.

A client sends the raw columns (item ids as strings, the history as a list of strings, raw
numbers); the SavedModel parses them with the raw schema, applies the tf.Transform graph the
pipeline wrote (`TFTransformOutput.transform_raw_features`) and then the same feature
preparation as training (negative ids dropped, sequences cut to the planned length).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from common import storage
from common.plan import EmbeddingPlan
from trainer.inputs import prepare_features

INPUT_NAME = "examples"


def finite_numbers(raw: dict, numeric_features) -> dict:
    """The raw features, with each numeric one checked finite when the model runs.

    The pipeline rejects a row whose number is NaN or infinite; a request carrying one fails
    with an error naming the feature, as a request without a required feature does, instead
    of being scored on a value the model never saw.
    """
    checked = dict(raw)
    for name in numeric_features:
        value = raw[name]
        message = (
            f"feature {name!r} holds NaN or an infinity: the pipeline rejects such a row, "
            "so the model does not score it"
        )
        if isinstance(value, tf.SparseTensor):
            checked[name] = tf.SparseTensor(
                value.indices,
                tf.debugging.assert_all_finite(value.values, message),
                value.dense_shape,
            )
        else:
            checked[name] = tf.debugging.assert_all_finite(value, message)
    return checked


def present_ids(raw: dict, categorical_features) -> dict:
    """The raw features, with each categorical one checked non-empty when the model runs:
    the pipeline rejects a row whose id is the empty string ("missing value"), so a request
    carrying one fails naming the feature instead of being scored as an unknown id."""
    checked = dict(raw)
    for name in categorical_features:
        value = raw[name]
        values = value.values if isinstance(value, tf.SparseTensor) else value
        check = tf.debugging.Assert(
            tf.reduce_all(tf.math.greater(tf.strings.length(values), 0)),
            [
                f"feature {name!r} holds an empty value: the pipeline rejects such a row as a "
                "missing value, so the model does not score it"
            ],
        )
        with tf.control_dependencies([check]):
            if isinstance(value, tf.SparseTensor):
                checked[name] = tf.SparseTensor(
                    value.indices, tf.identity(value.values), value.dense_shape
                )
            else:
                checked[name] = tf.identity(value)
    return checked


def make_serving_input_receiver_fn(
    transform_output: tft.TFTransformOutput,
    plan: EmbeddingPlan,
    id_bias: bool = False,
    key_features=(),
):
    raw_spec = dict(transform_output.raw_feature_spec())
    raw_spec.pop(plan.label["name"], None)
    used = set(plan.features) | set(plan.numeric_features)
    raw_spec = {name: spec for name, spec in raw_spec.items() if name in used}

    def serving_input_receiver_fn():
        serialized = tf.compat.v1.placeholder(tf.string, shape=[None], name="input_example")
        raw = finite_numbers(tf.io.parse_example(serialized, raw_spec), plan.numeric_features)
        categorical = [n for n, f in plan.features.items() if f.type == "categorical"]
        raw = present_ids(raw, [n for n in categorical if n in raw])
        transformed = transform_output.transform_raw_features(raw, drop_unused_features=True)
        features = prepare_features(transformed, plan, id_bias=id_bias, key_features=key_features)
        return tf.estimator.export.ServingInputReceiver(features, {INPUT_NAME: serialized})

    return serving_input_receiver_fn


def export_saved_model(estimator, base: str, serving, checkpoint: str | None) -> str:
    """`estimator.export_saved_model` into `base/<timestamp>`; returns its path.

    TensorFlow writes an export into `base/temp-<timestamp>`, then renames it. A stopped
    export's folder is removed, and so is one an earlier stopped run left (the run holds the
    model directory's lock: no other export is in progress).
    """
    remove_unfinished_exports(base)
    try:
        path = estimator.export_saved_model(base, serving, checkpoint_path=checkpoint)
    except BaseException:
        remove_unfinished_exports(base)
        raise
    return path.decode() if isinstance(path, bytes) else path


def remove_unfinished_exports(base: str) -> None:
    """Deletes the `temp-<timestamp>` folders of exports that did not finish under `base`."""
    for unfinished in tf.io.gfile.glob(storage.join(base, "temp-*")):
        storage.delete_tree(unfinished)
