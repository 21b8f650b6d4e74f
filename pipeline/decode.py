"""Parsing raw CSV rows: validate, split, and batch them into Arrow record batches.

Every row either becomes a row of the train or eval split or is rejected with a reason; none
is dropped silently. This module is plain Python plus pyarrow: no TensorFlow, no Beam, so the
row rules are tested in milliseconds and run unchanged inside Beam's workers.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from pipeline.config import Config

TRAIN = "train"
EVAL = "eval"

BYTES_LIST = pa.large_list(pa.large_binary())
FLOAT_LIST = pa.large_list(pa.float32())


class RowError(ValueError):
    """A raw row that cannot be used; the message is the reason recorded in rejected/."""


def split_of(key: str, eval_fraction: float) -> str:
    """Train or eval, from a hash of the split key that is stable across processes and runs."""
    digest = hashlib.md5(key.encode("utf-8")).digest()
    return EVAL if int.from_bytes(digest[:8], "big") < eval_fraction * 2.0**64 else TRAIN


def _number(text: str, what: str) -> float:
    if not text.strip():
        raise RowError(f"missing value for {what}")
    try:
        value = float(text)
    except ValueError:
        raise RowError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise RowError(f"{what}: {text!r} is not a finite number")
    return value


class CsvRowDecoder:
    """Turns one CSV line into (split, values) following the config.

    `values` maps each raw column the model uses (features and label) to a list: one bytes
    value for a categorical, the tokens for a sequence, one float for a number or the label.

    Args:
      config: the validated feature config.
      header: the column names of the file's header row.
    """

    def __init__(self, config: Config, header: Sequence[str]):
        self._config = config
        self._width = len(header)
        self._delimiter = config.input.field_delimiter
        self._list_delimiter = config.input.list_delimiter
        index = {name: i for i, name in enumerate(header)}
        self._key_index = index[config.split.key]
        self._eval_fraction = config.split.eval_fraction
        self._binary = config.label.type == "binary"
        self._columns: list[tuple[str, int, str]] = [
            (f.name, index[f.name], f.type) for f in config.features
        ]
        self._columns.append((config.label.name, index[config.label.name], "label"))

    @property
    def column_names(self) -> list[str]:
        return [name for name, _, _ in self._columns]

    def decode(self, line: str) -> tuple[str, dict[str, list[Any]]]:
        """Parses one line.

        Returns:
          (split, values): the split the row belongs to and its values by column.

        Raises:
          RowError: the row cannot be used; the message says why.
        """
        if not line.strip():
            raise RowError("blank line")
        try:
            cells = next(csv.reader([line], delimiter=self._delimiter, strict=True))
        except csv.Error as e:
            raise RowError(f"malformed CSV: {e}") from None
        if len(cells) != self._width:
            raise RowError(f"expected {self._width} fields, got {len(cells)}")
        values: dict[str, list[Any]] = {}
        for name, i, kind in self._columns:
            cell = cells[i]
            if kind == "sequence":
                values[name] = [t.encode("utf-8") for t in cell.split(self._list_delimiter) if t]
            elif kind == "categorical":
                if not cell:
                    raise RowError(f"missing value for {name}")
                values[name] = [cell.encode("utf-8")]
            elif kind == "numeric":
                values[name] = [_number(cell, name)]
            else:
                label = _number(cell, f"label {name}")
                if self._binary and label not in (0.0, 1.0):
                    raise RowError(f"label {name}: {cell!r} is not 0 or 1")
                values[name] = [label]
        key = cells[self._key_index]
        if not key:
            raise RowError(f"missing value for split key {self._config.split.key}")
        return split_of(key, self._eval_fraction), values


def parse_header(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter))


def check_header(header: Sequence[str], config: Config, source: str) -> None:
    """Raises ValueError naming the file and the columns the config needs but the file lacks."""
    missing = [c for c in config.columns() if c not in header]
    if missing:
        raise ValueError(
            f"{source}: the header has no column {', '.join(repr(m) for m in missing)} "
            f"that the config names; the header is: {', '.join(header)}"
        )
    duplicated = sorted({c for c in header if list(header).count(c) > 1})
    if duplicated:
        raise ValueError(f"{source}: the header repeats column {duplicated[0]!r}")


def to_record_batch(rows: Iterable[dict[str, list[Any]]], schema: pa.Schema) -> pa.RecordBatch:
    """Packs decoded rows into one record batch with the columns of `schema`, in its order."""
    rows = list(rows)
    arrays = [pa.array([row[field.name] for row in rows], type=field.type) for field in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
