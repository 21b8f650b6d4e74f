"""The preprocessing_fn through tf.Transform's own test harness, on a few inline rows."""

import pyarrow as pa
import pytest
import tensorflow as tf
from tensorflow_transform.beam import tft_unit
from tensorflow_transform.tf_metadata import schema_utils

from common.config import parse_config
from pipeline import features
from pipeline.decode import CsvRowDecoder, to_record_batch
from pipeline.preprocessing import PreprocessingFn

pytestmark = pytest.mark.pipeline_env

CONFIG = parse_config(
    {
        "split": {"key": "user_id"},
        "label": {"name": "clicked"},
        "feature": [
            {"name": "item_id", "type": "categorical", "vocabulary": "items"},
            {"name": "history", "type": "sequence", "vocabulary": "items"},
            {"name": "device", "type": "categorical"},
            {"name": "price", "type": "numeric"},
        ],
        "vocabulary": {"num_oov_buckets": 1},
        "embedding": {"dimension": 8},
    }
)
HEADER = ["user_id", "item_id", "history", "device", "price", "clicked"]
TRAIN_LINES = [
    "u1,a,b a,phone,1,1",
    "u2,b,,phone,2,0",  # an empty history
    "u3,a,a a c,web,3,1",  # a repeated token
]


def _batch(lines):
    decoder = CsvRowDecoder(CONFIG, HEADER)
    schema = features.tensor_adapter_config(CONFIG).arrow_schema
    return to_record_batch([decoder.decode(line)[1] for line in lines], schema)


class PreprocessingTest(tft_unit.TransformTestCase):
    def test_shared_vocabulary_ids_and_z_scores(self):
        # items counted over item_id and history together: a x5, b x2, c x1.
        # device: phone x2, web x1.
        expected = [
            {"item_id": 0, "history": [1, 0], "device": 0, "price": -1.2247449, "clicked": 1.0},
            {"item_id": 1, "history": [], "device": 0, "price": 0.0, "clicked": 0.0},
            {"item_id": 0, "history": [0, 0, 2], "device": 1, "price": 1.2247449, "clicked": 1.0},
        ]
        self.assertAnalyzeAndTransformResults(
            [_batch(TRAIN_LINES)],
            features.tensor_adapter_config(CONFIG),
            PreprocessingFn(CONFIG),
            expected,
            expected_vocab_file_contents={
                "items": [b"a", b"b", b"c"],
                "device": [b"phone", b"web"],
            },
        )

    def test_unseen_values_land_in_the_oov_bucket(self):
        # Analyzed on TRAIN_LINES, applied to rows with values never seen: 'zzz' maps to the
        # one OOV bucket of items (id 3) and of device (id 2).
        test_rows = ["u9,zzz,zzz a,tv,2,0"]
        expected = [
            {"item_id": 3, "history": [3, 0], "device": 2, "price": 0.0, "clicked": 0.0},
        ]
        self.assertAnalyzeAndTransformResults(
            [_batch(TRAIN_LINES)],
            features.tensor_adapter_config(CONFIG),
            PreprocessingFn(CONFIG),
            expected,
            test_data=[_batch(test_rows)],
        )


def test_raw_schema_matches_the_config():
    spec = schema_utils.schema_as_feature_spec(features.raw_schema(CONFIG)).feature_spec
    assert spec["history"] == tf.io.VarLenFeature(tf.string)
    assert spec["item_id"] == tf.io.FixedLenFeature([], tf.string)
    assert spec["price"] == tf.io.FixedLenFeature([], tf.float32)
    assert spec["clicked"] == tf.io.FixedLenFeature([], tf.float32)
    assert features.tensor_adapter_config(CONFIG).arrow_schema.field("history").type == (
        pa.large_list(pa.large_binary())
    )
