"""Reading raw files of each input format, and checking them before the pipeline starts.

Every format is read as blocks of records of one file, (source file, [record, ...]): CSV and
JSON lines (bytes) from a splittable block reader, serialized tf.Examples and Parquet rows
(dicts) batched after Beam's readers. `DecodeBlocks` turns each block into record batches of
train and eval rows, and rejected rows with their reasons (`pipeline.batches`). Checks that
can fail fast (no file, an empty input, a column the config names but the data lacks) run in
the launcher, before Beam starts.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filebasedsource import FileBasedSource
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from common.config import Config
from pipeline import decode

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


class _LineBlockSource(FileBasedSource):
    """A text file as blocks of lines: (file, [line, ...]), newlines removed.

    Splittable like ReadFromText: a line belongs to the range its first byte falls in, and
    each line is claimed from the range tracker, so dynamic splits never read a line twice.
    Lines end at "\n" (a "\r" before it is removed when the line is decoded). Compressed
    files are read whole, as Beam does for every compressed text file.
    """

    _CHUNK_BYTES = 1 << 22

    def __init__(self, path: str, skip_header: bool, block_lines: int):
        super().__init__(path, compression_type=CompressionTypes.AUTO, validate=False)
        self._skip_header = skip_header
        self._block_lines = block_lines

    def read_records(self, file_name, range_tracker):
        with self.open_file(file_name) as f:
            position = len(f.readline()) if self._skip_header else 0
            start = range_tracker.start_position()
            if start > position:
                f.seek(start - 1)  # the line that starts before `start` is not ours
                position = start - 1 + len(f.readline())
            claim = range_tracker.try_claim
            block: list[bytes] = []
            remainder = b""
            done = False
            while not done:
                chunk = f.read(self._CHUNK_BYTES)
                if chunk:
                    data = remainder + chunk
                    cut = data.rfind(b"\n")
                    if cut < 0:
                        remainder = data
                        continue
                    lines = data[:cut].split(b"\n")
                    remainder = data[cut + 1 :]
                else:  # the end of the file; a last line may lack its newline
                    lines = [remainder] if remainder else []
                    cut = -1
                    done = True
                starts = itertools.accumulate((len(line) + 1 for line in lines), initial=position)
                for line, line_start in zip(lines, starts, strict=False):  # one start too many
                    if not claim(line_start):
                        done = True  # the rest of the file belongs to other ranges
                        break
                    block.append(line)
                    if len(block) == self._block_lines:
                        yield file_name, block
                        block = []
                position += cut + 1
            if block:
                yield file_name, block


def _by_file(records: list[tuple[str, Any]]) -> Iterator[tuple[str, list[Any]]]:
    for source, group in itertools.groupby(records, key=lambda r: r[0]):
        yield source, [record for _, record in group]


class ReadRaw(beam.PTransform):
    """Files -> blocks of raw records, (source file, [record, ...]), for the input format.

    A record is a CSV or JSON line (bytes), a serialized tf.Example, or a Parquet row (a dict).
    """

    def __init__(self, files: Sequence[str], config: Config, block_size: int):
        super().__init__()
        self._files = list(files)
        self._format = config.input.format
        self._block_size = block_size

    def expand(self, pbegin):
        if self._format in ("csv", "jsonl"):
            reads = [
                pbegin
                | f"ReadText{i}"
                >> beam.io.Read(_LineBlockSource(path, self._format == "csv", self._block_size))
                for i, path in enumerate(self._files)
            ]
            return reads | "FlattenFiles" >> beam.Flatten()
        files = pbegin | "ListFiles" >> beam.Create(self._files)
        if self._format == "tfrecord":
            records = files | "ReadTFRecords" >> beam.io.ReadAllFromTFRecord(with_filename=True)
        else:
            records = files | "ReadParquet" >> beam.io.ReadAllFromParquet(with_filename=True)
        return (
            records
            | "Block"
            >> beam.BatchElements(min_batch_size=self._block_size, max_batch_size=self._block_size)
            | "ByFile" >> beam.FlatMap(_by_file)
        )


def _shown(record: Any, fmt: str) -> str:
    """The raw record as text, for rejected/."""
    if fmt in ("csv", "jsonl"):
        return record.decode("utf-8", "replace").rstrip("\r")
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


class DecodeBlocks(beam.DoFn):
    """(file, records) -> train record batches, and tagged eval batches and rejected rows.

    Args:
      config, header, schema: as `pipeline.batches.BlockDecoder` takes them.
      counted: whether this pass reports: the row counters and rejected rows. The pipeline
        decodes its input twice and reports the first pass only.
    """

    def __init__(self, config: Config, header: list[str] | None, schema, counted: bool = True):
        self._config = config
        self._header = header
        self._schema = schema
        self._counted = counted
        self._rows = beam.metrics.Metrics.counter("pipeline", "rows_read")
        self._rejected = beam.metrics.Metrics.counter("pipeline", "rows_rejected")
        self._train = beam.metrics.Metrics.counter("pipeline", "rows_train")
        self._eval = beam.metrics.Metrics.counter("pipeline", "rows_eval")

    def setup(self):
        from pipeline.batches import BlockDecoder

        self._decoder = BlockDecoder(self._config, self._header, self._schema)
        self._seen = 0

    def process(self, element):
        source, records = element
        before = self._seen
        self._seen += len(records)
        if self._seen // PROGRESS_EVERY > before // PROGRESS_EVERY:
            logging.getLogger("pipeline").info(
                "%s rows decoded by this worker, %s pass (now reading %s)",
                f"{self._seen:,}",
                "measuring" if self._counted else "transforming",
                source,
            )
        block = self._decoder.decode(records)
        yield from block.train
        for batch in block.eval:
            yield beam.pvalue.TaggedOutput(decode.EVAL, batch)
        if not self._counted:
            return
        self._rows.inc(len(records))
        self._train.inc(sum(batch.num_rows for batch in block.train))
        self._eval.inc(sum(batch.num_rows for batch in block.eval))
        for index, reason in block.rejected:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(
                REJECTED,
                {
                    "file": source,
                    "row": _shown(records[index], self._config.input.format),
                    "reason": reason,
                },
            )
