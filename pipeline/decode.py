"""Parsing raw rows of every input format: validate, split, batch into Arrow record batches.

Every row either becomes a row of the train, validation or eval split or is rejected with a
reason; none is dropped silently. The rules are the same whatever the format: a categorical
needs one value, a number must parse, a sequence or a bag is a list (a CSV cell split by
`list_delimiter`, a JSON array, a repeated tf.Example feature, a Parquet list). Ids are kept
as text, so the integer 42 and the string "42" are the same id in every format.

Plain Python plus pyarrow (TensorFlow's Example proto is imported only to read TFRecords), so
the row rules are tested in milliseconds and run unchanged inside Beam's workers.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from common.config import LIST_TYPES, Config

# A cell may hold a long sequence (100,000 ids is several hundred KB): the csv module's
# default limit of 131,072 characters a field would reject a row the other formats accept.
csv.field_size_limit(2**31 - 1)

TRAIN = "train"
VALIDATION = "validation"
EVAL = "eval"
SPLITS = (TRAIN, VALIDATION, EVAL)
_MISSING = object()


class RowError(ValueError):
    """A raw row that cannot be used; the message is the reason recorded in rejected/."""


class _DuplicateKey(Exception):
    """A JSON object that names one key twice (json.loads would keep the last value)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    row = dict(pairs)
    if len(row) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return row


def reason_kind(reason: str) -> str:
    """The reason without the row's own values, to count reasons of one kind together."""
    return re.sub(r"'[^']*'", "'...'", reason)


_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK = 0xFFFFFFFFFFFFFFFF


def _fmix64(h):
    """MurmurHash3's 64-bit finalizer, on a Python int or a numpy uint64 array alike."""
    if isinstance(h, int):
        h ^= h >> 33
        h = (h * 0xFF51AFD7ED558CCD) & _MASK
        h ^= h >> 33
        h = (h * 0xC4CEB9FE1A85EC53) & _MASK
        return h ^ (h >> 33)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)  # numpy arrays wrap around silently
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def split_hash(key: str) -> int:
    """A 64-bit hash of the key's UTF-8 bytes (FNV-1a, then MurmurHash3's finalizer), stable
    across processes, runs and machines; `split_hashes` computes the same over an array."""
    h = _FNV_OFFSET
    for byte in key.encode("utf-8"):
        h = ((h ^ byte) * _FNV_PRIME) & _MASK
    return _fmix64(h)


def split_hashes(keys: pa.Array) -> np.ndarray:
    """`split_hash` of every string of an Arrow string array, vectorized: one pass of numpy
    operations per byte position, so a block of short keys costs a few array operations."""
    keys = keys.cast(pa.large_binary())
    offsets = np.frombuffer(keys.buffers()[1], dtype=np.int64)
    offsets = offsets[keys.offset : keys.offset + len(keys) + 1]
    data = np.frombuffer(keys.buffers()[2], dtype=np.uint8) if len(keys) else np.zeros(0)
    starts, lengths = offsets[:-1], np.diff(offsets)
    hashes = np.full(len(keys), _FNV_OFFSET, dtype=np.uint64)
    for position in range(int(lengths.max()) if len(keys) else 0):
        active = np.flatnonzero(lengths > position)
        mixed = hashes[active] ^ data[starts[active] + position].astype(np.uint64)
        hashes[active] = mixed * np.uint64(_FNV_PRIME)
    return _fmix64(hashes)


def eval_threshold(eval_fraction: float) -> int:
    """Keys whose `split_hash` is below this go to eval."""
    return min(int(eval_fraction * 2.0**64), _MASK)


def split_thresholds(eval_fraction: float, validation_fraction: float = 0.0) -> tuple[int, int]:
    """(eval, validation) thresholds on `split_hash`: below the first a key goes to eval,
    below the second (and not below the first) to validation, else to train.

    Eval takes the lowest hashes whatever the validation share, so adding a validation split
    takes its keys from train and leaves the eval split as it was.
    """
    return eval_threshold(eval_fraction), eval_threshold(eval_fraction + validation_fraction)


def split_of(key: str, eval_fraction: float, validation_fraction: float = 0.0) -> str:
    """Train, validation or eval, from a stable hash of the split key: every row of a key goes
    one way."""
    h = split_hash(key)
    to_eval, to_validation = split_thresholds(eval_fraction, validation_fraction)
    if h < to_eval:
        return EVAL
    return VALIDATION if h < to_validation else TRAIN


def _text(value: Any, what: str) -> str:
    """An id as text: strings as they are, integers in decimal."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise RowError(f"{what}: value is not UTF-8 text") from None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise RowError(f"{what}: {value!r} is not a string or an integer id")


NUMBER_PATTERN = (
    r"^[ \t]*[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"|(?i:inf|infinity|nan))[ \t]*$"
)
"""A number as text: ASCII digits only, no `_` separators (Python's float() takes both, and
digits of other scripts such as '٣'); inf and nan parse, to be refused as not finite."""

_NUMBER = re.compile(NUMBER_PATTERN)
FLOAT32_LIMIT = 2.0**128 - 2.0**103
"""float32's largest value plus half a unit in its last place: from here on the cast to
float32 (round to nearest, ties to even) gives infinity."""


def _number(value: Any, what: str) -> float:
    """A finite number that stays finite as float32, the type numbers are stored in."""
    if value is _MISSING or value is None or (isinstance(value, str | bytes) and not value.strip()):
        raise RowError(f"missing value for {what}")
    if isinstance(value, bool) or isinstance(value, list | tuple | dict):
        raise RowError(f"{what}: {value!r} is not a number")
    shown = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if isinstance(value, int) and abs(value) > 10**40:
        shown = f"{str(value)[:12]}... ({len(str(abs(value)))} digits)"
    if isinstance(value, bytes | str) and not _NUMBER.match(shown):
        raise RowError(f"{what}: {shown!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RowError(f"{what}: {shown!r} is not a number") from None
    except OverflowError:  # an integer too large for a float (JSON)
        number = math.inf
    if not math.isfinite(number):
        if isinstance(value, int):
            raise RowError(f"{what}: {shown!r} is beyond float32's range")
        raise RowError(f"{what}: {shown!r} is not a finite number")
    if abs(number) >= FLOAT32_LIMIT:
        raise RowError(f"{what}: {shown!r} is beyond float32's range")
    return number


class RowDecoder:
    """Turns one raw row, in any format, into (split, values) following the config.

    `values` maps each raw column the model uses (features and label) to a list: one bytes
    value for a categorical, the tokens for a sequence or a bag, one float for a number or the
    label.

    Args:
      config: the validated feature config.
      header: for CSV, the column names of the files' header row.
    """

    def __init__(self, config: Config, header: Sequence[str] | None = None):
        self._config = config
        self._list_delimiter = config.input.list_delimiter
        self._fractions = (config.split.eval_fraction, config.split.validation_fraction)
        self._binary = config.label.type == "binary"
        self._key = config.split.key
        self._columns = [(f.name, f.type) for f in config.features]
        self._columns.append((config.label.name, "label"))
        self._sequence_names = {name for name, kind in self._columns if kind in LIST_TYPES}
        self._header = list(header) if header is not None else None
        if self._header is not None:
            self._index = {name: i for i, name in enumerate(self._header)}

    def _sequence(self, raw: Any, name: str) -> list[bytes]:
        if raw is _MISSING or raw is None:
            return []
        if isinstance(raw, list | tuple):
            tokens = []
            for value in raw:
                if isinstance(value, list | tuple | dict):
                    raise RowError(f"{name}: nested lists are not a sequence of ids")
                token = _text(value, name)
                if token:
                    tokens.append(token.encode("utf-8"))
            return tokens
        raise RowError(f"{name}: expected a list of ids, got {raw!r}")

    def _categorical(self, raw: Any, name: str) -> list[bytes]:
        if raw is _MISSING or raw is None or raw == "" or raw == b"":
            raise RowError(f"missing value for {name}")
        if isinstance(raw, list | tuple | dict):
            raise RowError(f"{name}: a list where one value belongs")
        return [_text(raw, name).encode("utf-8")]

    def decode_values(self, get: Callable[[str], Any]) -> tuple[str, dict[str, list[Any]]]:
        """Validates the columns `get(name)` returns (`_MISSING` when absent).

        Raises:
          RowError: the row cannot be used; the message says why.
        """
        values: dict[str, list[Any]] = {}
        try:
            return self._decode_values(get, values)
        except UnicodeEncodeError:
            # Only JSON can spell text that is not Unicode: an escaped lone surrogate
            # ("\\ud800") decodes to a str that no UTF-8 encoder takes.
            failed = next((n for n, _ in self._columns if n not in values), self._key)
            raise RowError(
                f"{failed}: the value is not valid Unicode text (a lone surrogate, such as an "
                "escaped \\ud800 without its pair)"
            ) from None

    def _decode_values(
        self, get: Callable[[str], Any], values: dict[str, list[Any]]
    ) -> tuple[str, dict[str, list[Any]]]:
        for name, kind in self._columns:
            raw = get(name)
            if kind in LIST_TYPES:
                values[name] = self._sequence(raw, name)
            elif kind == "categorical":
                values[name] = self._categorical(raw, name)
            elif kind == "numeric":
                values[name] = [_number(raw, name)]
            else:
                label = _number(raw, f"label {name}")
                if self._binary and label not in (0.0, 1.0):
                    raise RowError(f"label {name}: {raw!r} is not 0 or 1")
                values[name] = [label]
        key = get(self._key)
        if key is _MISSING or key is None or key == "" or isinstance(key, list | dict):
            raise RowError(f"missing value for split key {self._key}")
        return split_of(_text(key, self._key), *self._fractions), values

    def decode_csv(self, line: str) -> tuple[str, dict[str, list[Any]]]:
        if not line.strip():
            raise RowError("blank line")
        if line.count('"') % 2:
            # A well-formed row has its quotes in pairs; an odd count is a quoted cell cut
            # by a line break (its other part is on a neighbouring line, refused the same way).
            raise RowError(
                "an odd number of quote characters: a quoted cell spans lines, and a CSV row "
                "must fit on one line"
            )
        try:
            cells = next(
                csv.reader([line], delimiter=self._config.input.field_delimiter, strict=True)
            )
        except csv.Error as e:
            raise RowError(f"malformed CSV: {e}") from None
        if len(cells) != len(self._header):
            raise RowError(f"expected {len(self._header)} fields, got {len(cells)}")
        sequences = self._sequence_names

        def get(name):
            cell = cells[self._index[name]]
            if name in sequences:
                return cell.split(self._list_delimiter)
            return cell

        return self.decode_values(get)

    def decode_json(self, line: str) -> tuple[str, dict[str, list[Any]]]:
        line = line.removeprefix("\ufeff")  # a byte order mark opening a file
        if not line.strip():
            raise RowError("blank line")
        try:
            # A repeated key is refused, as a CSV header that repeats a column is: which of
            # the two values is meant cannot be known.
            row = json.loads(line, object_pairs_hook=_unique_keys)
        except _DuplicateKey as e:
            raise RowError(f"the JSON object repeats the key {e.args[0]!r}") from None
        except json.JSONDecodeError as e:
            raise RowError(f"malformed JSON: {e.msg} at column {e.colno}") from None
        except ValueError as e:  # e.g. an integer of more digits than Python converts
            raise RowError(f"malformed JSON: {e}") from None
        except RecursionError:
            raise RowError("malformed JSON: nested too deeply") from None
        if not isinstance(row, dict):
            raise RowError("a JSON line must be an object of column: value")
        return self.decode_mapping(row)

    def decode_mapping(self, row: dict[str, Any]) -> tuple[str, dict[str, list[Any]]]:
        """A row as a dict (a JSON object, a Parquet row)."""
        return self.decode_values(lambda name: row.get(name, _MISSING))

    def decode_example(self, serialized: bytes) -> tuple[str, dict[str, list[Any]]]:
        """A serialized tf.Example: a sequence is a repeated feature, scalars hold one value."""
        from tensorflow.core.example import example_pb2

        example = example_pb2.Example()
        try:
            example.ParseFromString(serialized)
        except Exception as e:  # the proto library raises its own DecodeError
            raise RowError(f"not a tf.Example: {e}") from None
        features = example.features.feature
        sequences = self._sequence_names

        def get(name):
            if name not in features:
                return _MISSING
            feature = features[name]
            kind = feature.WhichOneof("kind")
            values = list(getattr(feature, kind).value) if kind else []
            if name in sequences:
                return values
            if not values:
                return _MISSING
            if len(values) > 1:
                raise RowError(f"{name}: a list of {len(values)} values where one belongs")
            return values[0]

        return self.decode_values(get)


class CsvRowDecoder(RowDecoder):
    """A `RowDecoder` for CSV lines; `decode` takes one line without its newline."""

    def __init__(self, config: Config, header: Sequence[str]):
        super().__init__(config, header)

    def decode(self, line: str) -> tuple[str, dict[str, list[Any]]]:
        return self.decode_csv(line)


def parse_header(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter))


def check_columns(
    columns: Sequence[str], config: Config, source: str, what: str = "the header"
) -> None:
    """Raises ValueError naming the file and the columns the config needs but it lacks."""
    missing = [c for c in config.columns() if c not in columns]
    if missing:
        raise ValueError(
            f"{source}: {what} has no column {', '.join(repr(m) for m in missing)} "
            f"that the config names; it has: {', '.join(columns)}"
        )
    duplicated = sorted({c for c in columns if list(columns).count(c) > 1})
    if duplicated:
        raise ValueError(f"{source}: {what} repeats column {duplicated[0]!r}")


def to_record_batch(rows: Iterable[dict[str, list[Any]]], schema: pa.Schema) -> pa.RecordBatch:
    """Packs decoded rows into one record batch with the columns of `schema`, in its order."""
    rows = list(rows)
    arrays = [pa.array([row[field.name] for row in rows], type=field.type) for field in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
