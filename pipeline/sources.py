"""Reading raw files of each input format, and checking them before the pipeline starts.

Every format is read as (source file, record) pairs: a CSV or JSON line (bytes), a serialized
tf.Example, or a Parquet row (a dict). `ParseRows` turns each into a train or eval row, or a
rejected one with its reason. Checks that can fail fast (no file, an empty input, a column the
config names but the data lacks) run in the launcher, before Beam starts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline import decode
from pipeline.config import Config

REJECTED = "rejected"
PROGRESS_EVERY = 100_000


class InputError(ValueError):
    """Input files that are missing, empty, or do not match the config."""


def match_inputs(patterns: Sequence[str]) -> list[str]:
    """Every file the patterns match, sorted and without duplicates.

    Raises:
      InputError: a pattern matches no file.
    """
    files: list[str] = []
    for pattern in patterns:
        matched = sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)
        if not matched:
            raise InputError(f"--input {pattern!r} matches no file")
        files.extend(f for f in matched if f not in files)
    return files


def _open(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.AUTO)


def _first_lines(path: str, count: int) -> list[bytes]:
    lines = []
    with _open(path) as f:
        for _ in range(count):
            line = f.readline()
            if not line:
                break
            lines.append(line)
    return lines


def _first_example_keys(path: str) -> list[str] | None:
    from apache_beam.io.tfrecordio import _TFRecordUtil
    from tensorflow.core.example import example_pb2

    with _open(path) as f:
        record = _TFRecordUtil.read_record(f)
    if record is None:
        return None
    example = example_pb2.Example()
    example.ParseFromString(record)
    return list(example.features.feature)


def inspect_inputs(files: Sequence[str], config: Config) -> list[str] | None:
    """Checks the input files against the config before any pipeline runs.

    Returns:
      For CSV, the header every file shares; None for other formats.

    Raises:
      InputError: an empty input, or data that lacks a column the config names.
    """
    fmt = config.input.format
    columns = config.columns()
    header = None
    has_rows = False
    for path in files:
        if fmt == "csv":
            lines = _first_lines(path, 2)
            if not lines:
                raise InputError(f"{path}: the file is empty; a CSV input needs a header row")
            this = decode.parse_header(
                lines[0].decode("utf-8-sig").rstrip("\r\n"), config.input.field_delimiter
            )
            try:
                decode.check_columns(this, config, path)
            except ValueError as e:
                raise InputError(str(e)) from None
            if header is not None and this != header:
                raise InputError(
                    f"{path}: its header differs from {files[0]}'s; every input file must "
                    "have the same columns in the same order"
                )
            header = this
            has_rows = has_rows or len(lines) > 1
        elif fmt == "jsonl":
            lines = [line for line in _first_lines(path, 50) if line.strip()]
            if lines and not has_rows:
                try:
                    first = json.loads(lines[0])
                except ValueError:
                    first = None  # a bad line is rejected row by row, not here
                if isinstance(first, dict):
                    absent = [c for c in columns if c not in first]
                    scalars = [
                        c
                        for c in absent
                        if c == config.label.name
                        or c == config.split.key
                        or config.feature(c).type != "sequence"
                    ]
                    if scalars:
                        raise InputError(
                            f"{path}: the first record has no {', '.join(map(repr, scalars))}"
                            f" that the config names; it has: {', '.join(first)}"
                        )
            has_rows = has_rows or bool(lines)
        elif fmt == "tfrecord":
            keys = _first_example_keys(path)
            if keys is not None and not has_rows:
                needed = [
                    c
                    for c in columns
                    if c == config.label.name
                    or c == config.split.key
                    or config.feature(c).type != "sequence"
                ]
                absent = [c for c in needed if c not in keys]
                if absent:
                    raise InputError(
                        f"{path}: the first tf.Example has no feature "
                        f"{', '.join(map(repr, absent))} that the config names; it has: "
                        f"{', '.join(sorted(keys))}"
                    )
            has_rows = has_rows or keys is not None
        else:
            import pyarrow.parquet as pq

            with _open(path) as f:
                parquet = pq.ParquetFile(f)
                names = parquet.schema_arrow.names
                rows = parquet.metadata.num_rows
            try:
                decode.check_columns(names, config, path, what="the Parquet schema")
            except ValueError as e:
                raise InputError(str(e)) from None
            has_rows = has_rows or rows > 0
    if not has_rows:
        raise InputError(
            f"no data rows in {len(files)} input file(s) ({files[0]}"
            f"{', ...' if len(files) > 1 else ''}); nothing to measure"
        )
    return header


class ReadRaw(beam.PTransform):
    """Files -> (source file, raw record) for the config's input format."""

    def __init__(self, files: Sequence[str], config: Config):
        super().__init__()
        self._files = list(files)
        self._format = config.input.format

    def expand(self, pbegin):
        if self._format in ("csv", "jsonl"):
            reads = [
                pbegin
                | f"ReadText{i}"
                >> beam.io.ReadFromTextWithFilename(
                    path,
                    skip_header_lines=1 if self._format == "csv" else 0,
                    coder=beam.coders.BytesCoder(),
                    validate=False,  # matched before the pipeline was built
                )
                for i, path in enumerate(self._files)
            ]
            return reads | "FlattenFiles" >> beam.Flatten()
        files = pbegin | "ListFiles" >> beam.Create(self._files)
        if self._format == "tfrecord":
            return files | "ReadTFRecords" >> beam.io.ReadAllFromTFRecord(with_filename=True)
        return files | "ReadParquet" >> beam.io.ReadAllFromParquet(with_filename=True)


def _shown(record: Any, fmt: str) -> str:
    """The raw record as text, for rejected/."""
    if fmt in ("csv", "jsonl"):
        return record.decode("utf-8", "replace")
    if fmt == "tfrecord":
        from google.protobuf import text_format
        from tensorflow.core.example import example_pb2

        try:
            return text_format.MessageToString(
                example_pb2.Example.FromString(record), as_one_line=True
            )
        except Exception:  # not an Example at all: show its bytes
            return repr(record[:1000])
    return json.dumps(record, default=str, sort_keys=True)


class ParseRows(beam.DoFn):
    """(file, record) -> the train output, or the tagged eval or rejected outputs."""

    def __init__(self, config: Config, header: list[str] | None):
        self._config = config
        self._header = header
        self._rows = beam.metrics.Metrics.counter("pipeline", "rows_read")
        self._rejected = beam.metrics.Metrics.counter("pipeline", "rows_rejected")
        self._train = beam.metrics.Metrics.counter("pipeline", "rows_train")
        self._eval = beam.metrics.Metrics.counter("pipeline", "rows_eval")

    def setup(self):
        decoder = decode.RowDecoder(self._config, self._header)
        fmt = self._config.input.format

        def text(record: bytes) -> str:
            try:
                return record.decode("utf-8")
            except UnicodeDecodeError:
                raise decode.RowError("not UTF-8 text") from None

        self._decode = {
            "csv": lambda record: decoder.decode_csv(text(record).rstrip("\r")),
            "jsonl": lambda record: decoder.decode_json(text(record)),
            "tfrecord": decoder.decode_example,
            "parquet": decoder.decode_mapping,
        }[fmt]

    def start_bundle(self):
        self._seen = getattr(self, "_seen", 0)

    def process(self, element):
        source, record = element
        self._rows.inc()
        self._seen += 1
        if self._seen % PROGRESS_EVERY == 0:
            logging.getLogger("pipeline").info(
                "%s rows parsed by this worker (now reading %s)", f"{self._seen:,}", source
            )
        try:
            split, values = self._decode(record)
        except decode.RowError as e:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(
                REJECTED,
                {
                    "file": source,
                    "row": _shown(record, self._config.input.format),
                    "reason": str(e),
                },
            )
            return
        if split == decode.TRAIN:
            self._train.inc()
            yield values
        else:
            self._eval.inc()
            yield beam.pvalue.TaggedOutput(decode.EVAL, values)
