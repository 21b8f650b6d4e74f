"""Blocks of raw records -> Arrow record batches of the train, validation and eval splits, and
rejects.

A block is a few thousand raw records of one file. CSV blocks take a vectorized path: the
lines that are plainly well formed (no quote character, the header's number of fields) are
parsed by pyarrow's CSV reader and validated column by column with Arrow compute kernels,
so no Python runs per row. Every other record, and every CSV block that fails a vectorized
check, goes through `decode.RowDecoder` one row at a time, which gives each bad row its exact
reason. Both paths follow the same rules, so a row is decoded identically whichever path it
takes (tests check this on every kind of bad row).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from common.config import LIST_TYPES, Config
from pipeline import decode
from pipeline.lines import LineBlock


@dataclasses.dataclass
class DecodedBlock:
    """What one block of records became; `rejected` holds (record index, reason) pairs."""

    train: list[pa.RecordBatch] = dataclasses.field(default_factory=list)
    eval: list[pa.RecordBatch] = dataclasses.field(default_factory=list)
    rejected: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    validation: list[pa.RecordBatch] = dataclasses.field(default_factory=list)

    def split(self, name: str) -> list[pa.RecordBatch]:
        """The batches of split `name` (`decode.TRAIN`, `decode.VALIDATION`, `decode.EVAL`)."""
        return getattr(self, name)


class _NotVectorizable(Exception):
    """A block the vectorized path cannot decode exactly; it is decoded row by row."""


def _one_value_lists(values: pa.Array, value_type: pa.DataType) -> pa.LargeListArray:
    offsets = pa.array(np.arange(len(values) + 1, dtype=np.int64))
    return pa.LargeListArray.from_arrays(offsets, pc.cast(values, value_type, safe=False))


def _numbers(column: pa.Array) -> pa.Array:
    """float64 of every cell, or _NotVectorizable unless every cell is a number by the row
    path's rule (`decode.NUMBER_PATTERN`) that stays finite as float32."""
    if not pc.all(pc.match_substring_regex(column, decode.NUMBER_PATTERN)).as_py():
        raise _NotVectorizable
    try:
        numbers = pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise _NotVectorizable from None
    if numbers.null_count or not pc.all(pc.is_finite(numbers)).as_py():
        raise _NotVectorizable
    if pc.max(pc.abs(numbers)).as_py() >= decode.FLOAT32_LIMIT:
        raise _NotVectorizable
    return numbers


class BlockDecoder:
    """Decodes blocks of one input format into record batches with the columns of `schema`.

    Args:
      config: the validated feature config.
      header: for CSV, the column names of the files' header row.
      schema: the Arrow schema of raw record batches (`features.tensor_adapter_config`).
    """

    def __init__(self, config: Config, header: Sequence[str] | None, schema: pa.Schema):
        self._config = config
        self._schema = schema
        self._rows = decode.RowDecoder(config, header)
        self._format = config.input.format
        self._kinds = {f.name: f.type for f in config.features}
        self._kinds[config.label.name] = "label"
        if self._format == "csv":
            delimiter = config.input.field_delimiter
            self._delimiter = delimiter.encode("utf-8")
            self._fields = len(header)
            needed = set(self._kinds) | {config.split.key}
            self._read_options = pacsv.ReadOptions(
                column_names=list(header), use_threads=False, block_size=1 << 30
            )
            self._parse_options = pacsv.ParseOptions(
                delimiter=delimiter,
                quote_char=False,
                double_quote=False,
                escape_char=False,
                newlines_in_values=False,
                ignore_empty_lines=False,
            )
            self._convert_options = pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header if name in needed},
                include_columns=[name for name in header if name in needed],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            )
        self._thresholds = decode.split_thresholds(
            config.split.eval_fraction, config.split.validation_fraction
        )

    def decode(self, records: Sequence[Any]) -> DecodedBlock:
        """Decodes a block: CSV lines (bytes, no newline), JSON lines, serialized tf.Examples
        or Parquet rows (dicts)."""
        block = DecodedBlock()
        rest: Sequence[int] = range(len(records))
        if self._format == "csv":
            records, rest = self._decode_csv_vectorized(records, block)
        self._decode_rows(records, rest, block)
        return self._drop_empty(block)

    def _decode_csv_vectorized(
        self, records: Sequence[bytes], block: DecodedBlock
    ) -> tuple[Sequence[bytes], Sequence[int]]:
        """Decodes what it can of a CSV block in one go, into `block`.

        Returns:
          The lines (without their trailing "\r" where some are left for the row-by-row
          path), and the indices of those left for the row-by-row path.
        """
        text = records.text if isinstance(records, LineBlock) else b"\n".join(records)
        if b"\r" in text and _stray_cr(text, ends_a_line=True):
            records = [r.rstrip(b"\r") for r in records]
            text = b"\n".join(records)
        # Otherwise each "\r" ends a line ("\r\n"), which pyarrow's reader takes as a newline.
        if b'"' not in text and self._try_plain(text, len(records), block):
            return records, ()  # the common case: the whole block at once
        if b"\r" in text:
            records = [r.rstrip(b"\r") for r in records]
        # Sort the lines out: the quote-free ones with the header's number of fields.
        plain = [
            i
            for i, line in enumerate(records)
            if b'"' not in line and line.count(self._delimiter) == self._fields - 1
        ]
        if plain and self._try_plain(b"\n".join([records[i] for i in plain]), len(plain), block):
            plain_set = set(plain)
            return records, [i for i in range(len(records)) if i not in plain_set]
        return records, range(len(records))

    def _try_plain(self, text: bytes, lines: int, block: DecodedBlock) -> bool:
        try:
            batches = self._decode_plain_csv(text, lines)
        except _NotVectorizable:
            return False
        for split, batch in batches.items():
            block.split(split).append(batch)
        return True

    @staticmethod
    def _drop_empty(block: DecodedBlock) -> DecodedBlock:
        for split in decode.SPLITS:
            block.split(split)[:] = [b for b in block.split(split) if b.num_rows]
        return block

    def _decode_rows(self, records: Sequence[Any], indices, block: DecodedBlock) -> None:
        """The row-by-row path: exact reasons for every bad row."""
        decode_row = {
            "csv": lambda r: self._rows.decode_csv(_text(r)),
            "jsonl": lambda r: self._rows.decode_json(_text(r)),
            "tfrecord": self._rows.decode_example,
            "parquet": self._rows.decode_mapping,
        }[self._format]
        splits: dict[str, list] = {split: [] for split in decode.SPLITS}
        for i in indices:
            try:
                split, values = decode_row(records[i])
            except decode.RowError as e:
                block.rejected.append((i, str(e)))
                continue
            splits[split].append(values)
        for split, rows in splits.items():
            if rows:
                block.split(split).append(decode.to_record_batch(rows, self._schema))

    def _decode_plain_csv(self, text: bytes, lines: int) -> dict[str, pa.RecordBatch]:
        """`lines` lines without quotes, joined by newlines, parsed in one go; the batch of
        each split."""
        text += b"\n"
        if b"\0" in text or _stray_cr(text):
            raise _NotVectorizable  # Python's csv module rejects both; pyarrow would not
        try:
            # The row path refuses a line that is not UTF-8 whichever column holds the bad
            # bytes; pyarrow checks only the columns it converts.
            text.decode("utf-8")
        except UnicodeDecodeError:
            raise _NotVectorizable from None
        try:
            table = pacsv.read_csv(
                io.BytesIO(text),
                read_options=self._read_options,
                parse_options=self._parse_options,
                convert_options=self._convert_options,
            )
        except (pa.ArrowInvalid, UnicodeDecodeError):
            raise _NotVectorizable from None  # e.g. text that is not UTF-8
        if table.num_rows != lines:
            raise _NotVectorizable
        table = table.combine_chunks()
        hashes = self._hashes(table.column(self._config.split.key).chunk(0))
        arrays = []
        for field in self._schema:
            column = table.column(field.name).chunk(0)
            kind = self._kinds[field.name]
            if kind in LIST_TYPES:
                arrays.append(self._sequences(column))
            elif kind == "categorical":
                if pc.any(pc.equal(column, "")).as_py():
                    raise _NotVectorizable
                arrays.append(_one_value_lists(column, pa.large_binary()))
            else:
                numbers = _numbers(column)
                if (
                    kind == "label"
                    and self._config.label.type == "binary"
                    and not pc.all(pc.is_in(numbers, pa.array([0.0, 1.0]))).as_py()
                ):
                    raise _NotVectorizable
                arrays.append(_one_value_lists(numbers, pa.float32()))
        batch = pa.RecordBatch.from_arrays(arrays, schema=self._schema)
        to_eval, to_validation = (np.uint64(t) for t in self._thresholds)
        is_eval = hashes < to_eval
        is_validation = ~is_eval & (hashes < to_validation)
        return {
            decode.TRAIN: batch.filter(pa.array(~is_eval & ~is_validation)),
            decode.VALIDATION: batch.filter(pa.array(is_validation)),
            decode.EVAL: batch.filter(pa.array(is_eval)),
        }

    def _sequences(self, column: pa.Array) -> pa.LargeListArray:
        """Cells split by the list delimiter, empty tokens dropped (as the row path does)."""
        lists = pc.split_pattern(column, self._config.input.list_delimiter)
        tokens = pc.list_flatten(lists)
        keep = pc.not_equal(tokens, "")
        parents = pc.list_parent_indices(lists).to_numpy()
        counts = np.bincount(parents[keep.to_numpy(zero_copy_only=False)], minlength=len(lists))
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        values = tokens.filter(keep).cast(pa.large_binary())
        return pa.LargeListArray.from_arrays(pa.array(offsets), values)

    def _hashes(self, keys: pa.Array) -> np.ndarray:
        """The split hash of every row's key (`decode.split_hashes`)."""
        if pc.any(pc.equal(keys, "")).as_py():
            raise _NotVectorizable
        return decode.split_hashes(keys)


def _stray_cr(text: bytes, ends_a_line: bool = False) -> bool:
    """Whether `text` holds a "\r" that is not the "\r" of a "\r\n" (nor, if `ends_a_line`,
    its last byte)."""
    data = np.frombuffer(text, np.uint8)
    after = np.flatnonzero(data == ord("\r")) + 1
    if len(after) and after[-1] == len(data):
        if not ends_a_line:
            return True
        after = after[:-1]
    return bool(np.any(data[after] != ord("\n")))


def _text(record: bytes) -> str:
    try:
        return record.decode("utf-8")
    except UnicodeDecodeError:
        raise decode.RowError("not UTF-8 text") from None
