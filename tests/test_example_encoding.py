"""Transformed record batches encoded column-wise as tf.Examples: the same bytes as tfx_bsl's
encoder with the features sorted by name (a parse and a deterministic serialization a row),
for every width of varint, empty lists, negative and extreme ids and special floats."""

import math

import numpy as np
import pyarrow as pa
import pytest
from tensorflow.core.example import example_pb2
from tfx_bsl.public.tfxio import RecordBatchToExamplesEncoder

from pipeline import example_encoding

INT64 = pa.large_list(pa.int64())
FLOAT = pa.large_list(pa.float32())


def _reference(batch: pa.RecordBatch) -> list[bytes]:
    return [
        example_pb2.Example.FromString(example).SerializeToString(deterministic=True)
        for example in RecordBatchToExamplesEncoder().encode(batch)
    ]


def test_each_varint_width_empty_lists_and_special_floats_match_the_reference():
    edges = [0, 1, 127, 128, 16383, 16384, 2**21, 2**35, 2**56, 2**63 - 1, -1, -(2**63)]
    batch = pa.RecordBatch.from_pydict(
        {
            "history": pa.array([edges, [], [5, 5, 300], []], INT64),
            "item_id": pa.array([[0], [127], [128], [2**31]], pa.list_(pa.int64())),
            "price": pa.array([[math.nan], [-0.0], [math.inf], [1.5e-40]], FLOAT),
            "clicked": pa.array([[1.0], [0.0], [], [0.5, 0.25]], pa.list_(pa.float32())),
            "région": pa.array([[3], [2], [1], [0]], INT64),  # a name beyond ASCII
        }
    )
    encoded = example_encoding.encode(batch)
    assert encoded == _reference(batch)
    first = example_pb2.Example.FromString(encoded[0]).features.feature
    assert list(first["history"].int64_list.value) == edges
    assert (
        list(
            example_pb2.Example.FromString(encoded[1]).features.feature["history"].int64_list.value
        )
        == []
    )
    assert sorted(first) == ["clicked", "history", "item_id", "price", "région"]


def test_random_batches_match_the_reference():
    rng = np.random.default_rng(5)
    for rows in (1, 7, 1000):
        lengths = rng.integers(0, 40, size=rows)
        ids = rng.integers(0, 50_000, size=int(lengths.sum()))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        batch = pa.RecordBatch.from_pydict(
            {
                "history": pa.LargeListArray.from_arrays(offsets, pa.array(ids, pa.int64())),
                "device": pa.array([[int(d)] for d in rng.integers(0, 4, rows)], INT64),
                "price": pa.array([[float(p)] for p in rng.normal(size=rows)], FLOAT),
            }
        )
        assert example_encoding.encode(batch) == _reference(batch)


def test_an_empty_batch_has_no_examples():
    batch = pa.RecordBatch.from_pydict({"a": pa.array([], INT64)})
    assert example_encoding.encode(batch) == []


@pytest.mark.parametrize(
    "column",
    [
        pa.array([[b"x"], [b"y"]], pa.large_list(pa.large_binary())),  # bytes: not ours
        pa.array([[1], None], INT64),  # a missing list
        pa.array([[1], [None]], INT64),  # a missing value
        pa.array([[1.0], [2.0]], pa.large_list(pa.float64())),
    ],
)
def test_other_columns_are_left_to_tfx_bsl(column):
    batch = pa.RecordBatch.from_pydict({"ok": pa.array([[1], [2]], INT64), "other": column})
    assert example_encoding.encode(batch) is None


def test_a_batch_of_only_empty_lists_matches_the_reference():
    batch = pa.RecordBatch.from_pydict(
        {
            "history": pa.array([[], [], []], INT64),
            "price": pa.array([[], [], []], FLOAT),
        }
    )
    assert example_encoding.encode(batch) == _reference(batch)


def test_negative_ids_in_every_row_match_the_reference():
    rng = np.random.default_rng(11)
    ids = rng.integers(-(2**63), 2**63 - 1, size=(50, 3), endpoint=True)
    batch = pa.RecordBatch.from_pydict(
        {
            "history": pa.array(ids.tolist(), INT64),
            "item_id": pa.array([[int(i)] for i in -rng.integers(1, 2**40, 50)], INT64),
        }
    )
    assert example_encoding.encode(batch) == _reference(batch)


def test_a_sliced_batch_matches_the_reference():
    batch = pa.RecordBatch.from_pydict(
        {
            "history": pa.array([[1, 2], [300], [], [4, 5, 70000]], INT64),
            "price": pa.array([[1.0], [2.0, 3.0], [], [4.0]], FLOAT),
        }
    )
    for sliced in (batch.slice(1), batch.slice(1, 2), batch.slice(3)):
        assert example_encoding.encode(sliced) == _reference(sliced)


def test_a_few_long_rows_among_short_ones_match_the_reference():
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 5, size=300)
    lengths[[7, 150]] = [40_000, 25_000]  # far wider than the rest: encoded in parts
    ids = rng.integers(0, 2**20, size=int(lengths.sum()))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    batch = pa.RecordBatch.from_pydict(
        {
            "history": pa.LargeListArray.from_arrays(offsets, pa.array(ids, pa.int64())),
            "price": pa.array([[float(p)] for p in rng.normal(size=300)], FLOAT),
        }
    )
    assert example_encoding.encode(batch) == _reference(batch)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value >> 7 else 0))
        value >>= 7
        if not value:
            return bytes(out)


@pytest.mark.parametrize(
    "high", [128, 16_384, 2_000_000, example_encoding.TABLE_LIMIT, 2**40, None]
)
def test_varints_from_the_table_and_byte_by_byte_are_the_reference(high):
    # Below TABLE_LIMIT the varints are copied from a table of every value; above it (and for
    # negative ids) they are written a byte position at a time. Both give protobuf's bytes.
    rng = np.random.default_rng(high or 0)
    if high is None:
        values = np.array([-1, 0, 127, 128, -(2**63), 2**63 - 1], np.int64)
    else:
        values = rng.integers(0, high, 5_000, dtype=np.int64)
        values[:3] = [0, 127, high - 1]
    data, lengths = example_encoding._varints(values.view(np.uint64))
    expected = [_varint(int(v)) for v in values]
    assert bytes(data) == b"".join(expected)
    assert lengths.tolist() == [len(e) for e in expected]
