"""Transformed record batches -> serialized tf.Examples, with column-wise Arrow and numpy.

The bytes are exactly those of `tf.train.Example.SerializeToString(deterministic=True)`
(features sorted by name) for the examples tfx_bsl's `RecordBatchToExamplesEncoder` makes of
the same batch; tests compare the two. The wire format, written column by column instead of
building and serializing a message a row:

    Example    = 0x0A len(Features) Features
    Features   = for each feature, by name: 0x0A len(Entry) Entry
    Entry      = 0x0A len(name) name 0x12 len(Feature) Feature
    Feature    = 0x1A len(Int64List) Int64List  |  0x12 len(FloatList) FloatList
    Int64List  = 0x0A len(varints) varints      (nothing for an empty list)
    FloatList  = 0x0A 4n float32 little-endian  (nothing for an empty list)

Only list columns of int64 or float32 without nulls (what the `preprocessing_fn` outputs)
are encoded here; `encode` returns None for any other batch, and the caller uses tfx_bsl.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TABLE_LIMIT = 1 << 20
"""Values below this are written by copying their varints from a table of every value up to
a power of two above the largest (built once a process and size); larger ones, and negative
ids (ten bytes each), byte by byte."""
_tables: dict[int, pa.LargeBinaryArray] = {}


def _varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The varints of uint64 values, concatenated, and the byte length of each."""
    if not len(values):
        return np.zeros(0, np.uint8), np.zeros(0, np.int64)
    largest = int(values.max())
    if largest < 128:  # one byte each, the value itself
        return values.astype(np.uint8), np.ones(len(values), np.int64)
    if largest < TABLE_LIMIT:
        return _varints_from_table(values, largest)
    return _varints_bytewise(values, largest)


def _varints_from_table(values: np.ndarray, largest: int) -> tuple[np.ndarray, np.ndarray]:
    """`_varints` by gathering each value's bytes from a table of every value's varint
    (pyarrow's `take` over a binary array): a copy a value instead of a pass a byte."""
    size = 1 << largest.bit_length()
    table = _tables.get(size)
    if table is None:
        data, lengths = _varints_bytewise(np.arange(size, dtype=np.uint64), size - 1)
        offsets = np.zeros(size + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        table = pa.LargeBinaryArray.from_buffers(
            pa.large_binary(), size, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
        )
        _tables[size] = table
    taken = pc.take(table, pa.array(values.view(np.int64)))
    offsets = np.frombuffer(taken.buffers()[1], np.int64, len(values) + 1, taken.offset * 8)
    data = np.frombuffer(taken.buffers()[2], np.uint8, int(offsets[-1] - offsets[0]), offsets[0])
    return data, np.diff(offsets)


def _varints_bytewise(values: np.ndarray, largest: int) -> tuple[np.ndarray, np.ndarray]:
    """`_varints` a byte position at a time, for any uint64 values."""
    width = max(1, (largest.bit_length() + 6) // 7)
    lengths = np.ones(len(values), np.int64)
    for k in range(1, width):
        lengths += values >= np.uint64(1 << (7 * k))
    # Byte k of every value in column k of a table, then the table's bytes that the values
    # have, row by row: one pass each, no scatter.
    table = np.empty((len(values), width), np.uint8)
    for k in range(width):
        group = ((values >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        if k < width - 1:
            group |= (lengths > k + 1).astype(np.uint8) << 7  # more bytes follow
        table[:, k] = group
    return table[np.arange(width) < lengths[:, None]], lengths


def _binary(data: np.ndarray, row_lengths: np.ndarray) -> pa.Array:
    """A binary array whose row i holds the next row_lengths[i] bytes of `data`."""
    offsets = np.zeros(len(row_lengths) + 1, dtype=np.int64)
    np.cumsum(row_lengths, out=offsets[1:])
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(),
        len(row_lengths),
        [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data))],
    )


def _length_prefixed(pieces: list, lengths: np.ndarray) -> tuple[list, np.ndarray]:
    """`pieces` (of `lengths` bytes a row) preceded by the varint of their length."""
    prefix, prefix_lengths = _varints(lengths.astype(np.uint64))
    return [_binary(prefix, prefix_lengths), *pieces], lengths + prefix_lengths


def _feature(column: pa.Array) -> tuple[list, np.ndarray] | None:
    """The pieces of each row's `Feature` message and their byte lengths, or None."""
    if column.null_count or not (
        pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
    ):
        return None
    value_type = column.type.value_type
    offsets = column.offsets.to_numpy().astype(np.int64)
    offsets -= offsets[0]  # a slice's offsets start where it does; flatten() starts at 0
    counts = np.diff(offsets)
    flat = column.flatten()
    if flat.null_count:
        return None
    if pa.types.is_int64(value_type):
        values, value_lengths = _varints(flat.to_numpy().view(np.uint64))
        ends = np.zeros(len(value_lengths) + 1, dtype=np.int64)
        np.cumsum(value_lengths, out=ends[1:])
        payload = ends[offsets[1:]] - ends[offsets[:-1]]
        tag = b"\x1a"
    elif pa.types.is_float32(value_type):
        values = flat.to_numpy().astype("<f4").view(np.uint8)
        payload = counts * 4
        tag = b"\x12"
    else:
        return None
    pieces, lengths = _length_prefixed([_binary(values, payload)], payload)
    # An empty list has no packed field at all: drop its 0x0A and length.
    nonempty = counts > 0
    mask = pa.array(nonempty)
    packed_tag = pc.if_else(mask, _scalar(b"\x0a"), _scalar(b""))
    prefix = pc.if_else(mask, pieces[0], _scalar(b""))
    pieces = [packed_tag, prefix, pieces[1]]
    lengths = np.where(nonempty, 1 + lengths, 0)
    pieces, lengths = _length_prefixed(pieces, lengths)
    return [tag, *pieces], 1 + lengths


def encode(record_batch: pa.RecordBatch) -> list[bytes] | None:
    """The rows of `record_batch` as serialized tf.Examples, or None if a column is not a
    list of int64 or float32 without nulls."""
    rows = record_batch.num_rows
    if rows == 0:
        return []
    pieces: list = []
    total = np.zeros(rows, dtype=np.int64)
    names = sorted(record_batch.schema.names, key=lambda name: name.encode("utf-8"))
    for name in names:
        feature = _feature(record_batch.column(name))
        if feature is None:
            return None
        key = name.encode("utf-8")
        key_bytes = b"\x0a" + _varint_bytes(len(key)) + key + b"\x12"
        entry, entry_lengths = _length_prefixed(feature[0], feature[1])
        entry_lengths = entry_lengths + len(key_bytes)
        entry = [key_bytes, *entry]
        entry, entry_lengths = _length_prefixed(entry, entry_lengths)
        pieces += [b"\x0a", *entry]
        total += 1 + entry_lengths
    pieces, _ = _length_prefixed(pieces, total)
    pieces = [b"\x0a", *pieces]
    arrays = [p for p in pieces if not isinstance(p, bytes)]
    length = len(arrays[0])
    joined = pc.binary_join_element_wise(
        *[_scalar(p) if isinstance(p, bytes) else p for p in pieces], _scalar(b"")
    )
    if len(joined) != length:
        raise AssertionError("encoded a different number of examples than rows")
    return joined.to_pylist()


def _scalar(value: bytes) -> pa.Scalar:
    return pa.scalar(value, pa.large_binary())


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
