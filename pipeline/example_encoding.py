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

Each example is the same sequence of fields: constant bytes, a varint a row (the lengths, all
computed first from the rows' value counts and varint lengths) and a row's values. The rows
are laid out in a table with a row per example and a range of columns per field, as wide as
the field's longest; numpy writes a field for all rows at once, a column or a range of
columns at a time (constant fields once, in a first row copied to every row), and marks which
of the field's bytes each row keeps. The kept bytes, in row order, are the examples
concatenated: one boolean selection, with no per-row work. The examples are made Python
bytes by one `to_pylist` of a binary array over them. A batch of a few very long rows,
whose table would be mostly padding, is encoded in halves.

Only list columns of int64 or float32 without nulls (what the `preprocessing_fn` outputs)
are encoded here; `encode` returns None for any other batch, and the caller uses tfx_bsl.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# A batch whose rows, padded to the longest, would take more than this many times their bytes
# (plus the slack) is encoded in halves.
_MAX_PADDING = 4
_PADDING_SLACK = 1 << 16


def _varint_width(value: int) -> int:
    """The byte length of the varint of a non-negative int below 2**64."""
    return max(1, (value.bit_length() + 6) // 7)


def _varint_table(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The varint of each uint64 value as a row of a table as wide as the longest, which of
    the row's bytes are the varint's (the first ones), and its byte length.

    Built a byte (a column) at a time: numpy is slow on rows of a few bytes."""
    width = _varint_width(int(values.max(initial=0)))
    lengths = np.ones(len(values), np.int64)
    columns = [values.astype(np.uint8)]
    more = [np.ones(len(values), bool)]
    for k in range(1, width):
        more.append(values >= np.uint64(1 << (7 * k)))
        lengths += more[k]
        columns.append((values >> np.uint64(7 * k)).astype(np.uint8))
    for k in range(width - 1):  # the high bit: more bytes follow
        columns[k] &= np.uint8(0x7F)
        columns[k] |= more[k + 1].view(np.uint8) << np.uint8(7)
    return np.stack(columns, axis=1), np.stack(more, axis=1), lengths


class _Bytes:
    """The same bytes in every row."""

    def __init__(self, data: bytes):
        self.data = data
        self.lengths = self.width = len(data)

    def write(self, table: np.ndarray, keep: np.ndarray, at: int) -> None:
        table[:, at : at + self.width] = np.frombuffer(self.data, np.uint8)
        keep[:, at : at + self.width] = True


class _Varint:
    """`prefix` then the varint of a non-negative number, in each row where `present`."""

    def __init__(self, values: np.ndarray, present: np.ndarray | None, prefix: bytes):
        self.bytes, self.keep, lengths = _varint_table(values.astype(np.uint64))
        self.present = True if present is None else present
        self.keep &= np.reshape(self.present, (-1, 1))
        self.prefix = prefix
        self.lengths = (len(prefix) + lengths) * self.present
        self.width = len(prefix) + self.bytes.shape[1]

    def write(self, table: np.ndarray, keep: np.ndarray, at: int) -> None:
        for k, byte in enumerate(self.prefix):
            table[:, at + k] = byte
            keep[:, at + k] = self.present
        at += len(self.prefix)
        table[:, at : at + self.bytes.shape[1]] = self.bytes
        keep[:, at : at + self.bytes.shape[1]] = self.keep


def _varint(values: np.ndarray, present: np.ndarray | None = None, prefix=b"") -> _Varint | _Bytes:
    """`prefix` then the varint of each of the non-negative `values`, in each row where
    `present`: constant bytes if they are the same in every row."""
    if present is not None and present.all():
        present = None
    if present is None and len(values) and values.min() == values.max():
        return _Bytes(prefix + _varint_bytes(int(values[0])))
    return _Varint(values, present, prefix)


def _write_ragged(
    table: np.ndarray, keep: np.ndarray, at: int, width: int, data: np.ndarray, lengths
) -> None:
    """Writes the next `lengths` bytes of `data` at the start of each row of columns
    at..at+width."""
    kept = np.arange(width) < lengths[:, None]
    table[:, at : at + width][kept] = data
    keep[:, at : at + width] = kept


class _Int64Values:
    """A row's int64 values as concatenated varints (of their uint64 bits)."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        self.bytes, self.keep, lengths = _varint_table(values.view(np.uint64))
        ends = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=ends[1:])
        self.lengths = ends[offsets[1:]] - ends[offsets[:-1]]
        self.width = int(self.lengths.max(initial=0))
        self.one_a_row = len(values) == len(self.lengths) and (np.diff(offsets) == 1).all()

    def write(self, table: np.ndarray, keep: np.ndarray, at: int) -> None:
        if self.one_a_row:  # the table of varints is the rows' bytes
            table[:, at : at + self.width] = self.bytes
            keep[:, at : at + self.width] = self.keep
        else:
            data = self.bytes[self.keep]
            _write_ragged(table, keep, at, self.width, data, self.lengths)


class _Float32Values:
    """A row's float32 values, 4 little-endian bytes each."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        self.data = values.astype("<f4").view(np.uint8).reshape(-1, 4)
        self.lengths = 4 * np.diff(offsets)
        self.width = int(self.lengths.max(initial=0))
        self.one_a_row = len(self.data) == len(self.lengths) and self.width == 4

    def write(self, table: np.ndarray, keep: np.ndarray, at: int) -> None:
        if self.one_a_row:
            table[:, at : at + 4] = self.data
            keep[:, at : at + 4] = True
        else:
            _write_ragged(table, keep, at, self.width, self.data.reshape(-1), self.lengths)


def _feature_fields(column: pa.Array) -> tuple[list, np.ndarray] | None:
    """The fields of each row's `Feature` message and its byte lengths, or None."""
    if column.null_count or not (
        pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
    ):
        return None
    flat = column.flatten()
    if flat.null_count:
        return None
    offsets = column.offsets.to_numpy().astype(np.int64)
    offsets -= offsets[0]  # a sliced column's values start at its first offset
    if pa.types.is_int64(column.type.value_type):
        values, tag = _Int64Values(flat.to_numpy(), offsets), b"\x1a"
    elif pa.types.is_float32(column.type.value_type):
        values, tag = _Float32Values(flat.to_numpy(), offsets), b"\x12"
    else:
        return None
    nonempty = np.diff(offsets) > 0
    # An empty list has no packed field at all: no 0x0A, no length, no values.
    packed_length = _varint(values.lengths, nonempty, prefix=b"\x0a")
    payload = packed_length.lengths + values.lengths
    payload_length = _varint(payload)
    fields = [_Bytes(tag), payload_length, packed_length, values]
    return fields, 1 + payload_length.lengths + payload


def _example_fields(record_batch: pa.RecordBatch) -> list | None:
    """The fields of each row's `Example` message, in order, or None."""
    fields: list = []
    total = np.zeros(record_batch.num_rows, dtype=np.int64)
    names = sorted(record_batch.schema.names, key=lambda name: name.encode("utf-8"))
    for name in names:
        feature = _feature_fields(record_batch.column(name))
        if feature is None:
            return None
        key = name.encode("utf-8")
        key_bytes = b"\x0a" + _varint_bytes(len(key)) + key + b"\x12"
        feature_length = _varint(feature[1])
        entry = feature[1] + feature_length.lengths + len(key_bytes)
        entry_length = _varint(entry, prefix=b"\x0a")
        fields += [entry_length, _Bytes(key_bytes), feature_length, *feature[0]]
        total += entry_length.lengths + entry
    return [_varint(total, prefix=b"\x0a"), *fields]


def _table(fields: list, rows: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows' bytes, each field in columns of its own, and which of them are kept."""
    first_row = np.zeros((1, width), np.uint8)
    constant = np.zeros((1, width), bool)
    at = 0
    for field in fields:  # the constant fields, written once and copied to every row
        if isinstance(field, _Bytes):
            field.write(first_row, constant, at)
        at += field.width
    table = np.empty((rows, width), np.uint8)
    table[:] = first_row
    keep = np.empty((rows, width), bool)
    keep[:] = constant
    at = 0
    for field in fields:
        if not isinstance(field, _Bytes):
            field.write(table, keep, at)
        at += field.width
    return table, keep


def encode(record_batch: pa.RecordBatch) -> list[bytes] | None:
    """The rows of `record_batch` as serialized tf.Examples, or None if a column is not a
    list of int64 or float32 without nulls."""
    rows = record_batch.num_rows
    if rows == 0:
        return []
    fields = _example_fields(record_batch)
    if fields is None:
        return None
    lengths = np.zeros(rows, np.int64)
    for field in fields:
        lengths += field.lengths
    width = sum(field.width for field in fields)
    if rows > 1 and rows * width > _MAX_PADDING * int(lengths.sum()) + _PADDING_SLACK:
        half = rows // 2  # a few long rows: their width would pad every other row
        first = encode(record_batch.slice(0, half))
        return first + encode(record_batch.slice(half))
    table, keep = _table(fields, rows, width)
    data = table[keep]
    offsets = np.zeros(rows + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if len(data) != offsets[-1]:
        raise AssertionError("wrote a different number of bytes than measured")
    examples = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    return examples.to_pylist()


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
