"""Reading raw files in Beam: the user's file patterns -> blocks of raw records of one file.

The job graph carries the `--input` patterns, not the files they match: the workers match
them when the job runs, and one splittable read covers every matched file. So the job
description has the same size over 2 files and over 20,000 (one `beam.io.Read` per file made
it grow with the file count until Dataflow refused it). A file that two patterns match is
read once.

A block is (source file, [record, ...]). Every format is read by Beam's `ReadAllFiles` over
a block source of ours: CSV and JSON lines (bytes) by byte ranges of each file
(`_LineBlockSource`), serialized tf.Examples a file at a time (`_TFRecordBlockSource`), Parquet
rows (dicts) by row groups (`_ParquetBlockSource`, the config's columns only).

A damaged file fails the run with one line that names it and says what is wrong: a
compressed file is decompressed with Python's zlib, bz2 or lzma, which check every member's
end and checksum (`pipeline.input_files.open_checked`: Beam's own decompression stops quietly
at a cut, so a truncated `.csv.gz` would be read as a shorter file), a TFRecord's checksums
are checked, and a Parquet file pyarrow cannot read is named.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import struct
from collections.abc import Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filebasedsource import FileBasedSource, ReadAllFiles
from apache_beam.io.filesystem import CompressionTypes

from common import storage
from common.config import Config
from pipeline.input_files import InputError, csv_header, header_mismatch, open_checked
from pipeline.lines import LineBlock
from pipeline.sinks import masked_crc32c

# Byte ranges a worker reads at a time from an uncompressed file (Beam's ReadAllFromText
# uses the same); a compressed file is read whole.
DESIRED_RANGE_BYTES = 64 << 20
_NEWLINE = ord("\n")


@dataclasses.dataclass(frozen=True)
class CsvHeader:
    """The header every CSV file must start with, and where it was first read.

    Attributes:
      names: the column names.
      delimiter: the field delimiter.
      first_file: the file the launcher read it from, named in the error of a file whose
        header differs.
    """

    names: tuple[str, ...]
    delimiter: str
    first_file: str

    def check(self, path: str, line: bytes) -> None:
        """Raises InputError naming `path` unless `line` is this header."""
        if not line:
            raise InputError(f"{path}: the file is empty; a CSV input needs a header row")
        try:
            names = tuple(csv_header(line, self.delimiter))
        except ValueError:  # not UTF-8, or a CR inside the line: not the header
            names = None
        if names != self.names:
            raise InputError(header_mismatch(path, self.first_file))


class _CheckedSource(FileBasedSource):
    """A file source whose compressed files are decompressed with checks (`open_checked`)."""

    def open_file(self, file_name):
        return open_checked(file_name)


class _LineBlockSource(_CheckedSource):
    """A text file as blocks of lines: (file, LineBlock), newlines removed.

    Splittable like ReadFromText: a line belongs to the range its first byte falls in, and
    each block's lines are claimed from the range tracker (by the start of its last line),
    so dynamic splits never read a line twice. Lines end at "\n" (a "\r" before it is
    removed when the line is decoded); they are found with numpy and a block keeps the text
    they were read as (`pipeline.lines.LineBlock`), so no Python runs per line. Compressed
    files are read whole, as Beam does for every compressed text file.

    Args:
      path: the file.
      block_lines: lines per block.
      header: for CSV, the header the file's first line must be (it is skipped); None when
        the file has no header line.
    """

    _CHUNK_BYTES = 1 << 22

    def __init__(self, path: str, block_lines: int, header: CsvHeader | None = None):
        super().__init__(path, compression_type=CompressionTypes.AUTO, validate=False)
        self._header = header
        self._block_lines = block_lines

    def read_records(self, file_name, range_tracker):
        with self.open_file(file_name) as f:
            position = 0
            if self._header is not None:
                line = f.readline()
                self._header.check(file_name, line)  # every range checks it: one short read
                position = len(line)
            start = range_tracker.start_position()
            if start > position:
                f.seek(start - 1)  # the line that starts before `start` is not ours
                position = start - 1 + len(f.readline())
            data = b""  # the bytes from `position` on, not yet in a block
            while True:
                chunk = f.read(self._CHUNK_BYTES)
                data = data + chunk if data else chunk
                ends = np.flatnonzero(np.frombuffer(data, np.uint8) == _NEWLINE)
                if not chunk and data and (not len(ends) or ends[-1] != len(data) - 1):
                    ends = np.append(ends, len(data))  # a last line without its newline
                done = False
                used = 0  # bytes of `data` in blocks
                for first in range(0, len(ends), self._block_lines):
                    last = min(first + self._block_lines, len(ends)) - 1
                    if last - first + 1 < self._block_lines and chunk:
                        break  # a block's worth of lines is not there yet
                    lines, done = self._claimed(data, ends, first, last, position, range_tracker)
                    if lines:
                        yield file_name, lines
                    if done:
                        break
                    used = int(ends[last]) + 1
                position += used
                data = data[used:]
                if done or not chunk:
                    return

    @staticmethod
    def _claimed(data, ends, first, last, position, range_tracker) -> tuple[LineBlock | None, bool]:
        """The lines first..last of `data` (which starts at byte `position` of the file;
        `ends[i]` is where its line i ends) that this range reads, as a block, and whether
        the range ends there.

        The block's first line is claimed as a split point, and its last line's start set
        as the current position, so that no split falls inside the block from then on; the
        range's end read after that is final up to there, and the lines that start before
        it are this range's."""

        def start(i: int) -> int:
            return position + (int(ends[i - 1]) + 1 if i else 0)

        if not range_tracker.try_claim(start(first)):
            return None, True
        if last > first:
            range_tracker.set_current_position(start(last))
        stop = range_tracker.stop_position()
        count = last - first + 1
        while count > 1 and start(first + count - 1) >= stop:  # a split fell in the block
            count -= 1
        text = data[start(first) - position : int(ends[first + count - 1])]
        return LineBlock(text, count), count < last - first + 1


class _TFRecordBlockSource(_CheckedSource):
    """A TFRecord file as blocks of serialized records, (file, [record, ...]), read whole.

    Reads the TFRecord framing itself (as Beam's reader does) so that a damaged file fails
    with one line naming the file, the record's byte offset and what is wrong, rather than
    Beam's error, which shows the bytes in hex and not the file.

    Args:
      path: the file.
      block_records: records per block.
    """

    def __init__(self, path: str, block_records: int):
        super().__init__(
            path, compression_type=CompressionTypes.AUTO, splittable=False, validate=False
        )
        self._block_records = block_records

    def read_records(self, file_name, range_tracker):
        offset = 0
        block: list[bytes] = []
        with self.open_file(file_name) as f:
            while range_tracker.try_claim(offset):
                record = self._read_record(f, file_name, offset)
                if record is None:
                    break
                offset += len(record) + 16
                block.append(record)
                if len(block) == self._block_records:
                    yield file_name, block
                    block = []
        if block:
            yield file_name, block

    @staticmethod
    def _read_record(f, path: str, offset: int) -> bytes | None:
        def damaged(what: str) -> InputError:
            return InputError(
                f"{path}: not a valid TFRecord file: the record at byte {offset:,} {what}. "
                "Replace the file with an intact copy and rerun"
            )

        head = f.read(12)
        if not head:
            return None
        if len(head) < 12:
            raise damaged("is cut short (the file is truncated)")
        length, length_crc = struct.unpack("<QI", head)
        if masked_crc32c(head[:8]) != length_crc:
            raise damaged("has a length that fails its checksum (not TFRecord data, or damaged)")
        body = f.read(length + 4)
        if len(body) < length + 4:
            raise damaged(f"is cut short: {length:,} bytes announced (the file is truncated)")
        (data_crc,) = struct.unpack("<I", body[length:])
        if masked_crc32c(body[:length]) != data_crc:
            raise damaged("fails its data checksum (the file is damaged)")
        return body[:length]


class Unreadable:
    """A Parquet value that has no Python form (a date beyond year 9999, say).

    It stands in the row for that value, so the row is rejected, with the reason in its
    text, instead of the error stopping the run.
    """

    def __init__(self, error: Exception):
        self._error = _one_line(error)

    def __repr__(self) -> str:
        return f"<unreadable value: {self._error}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Unreadable) and other._error == self._error

    def __hash__(self) -> int:
        return hash(self._error)


_CONVERSION_ERRORS = (OverflowError, ValueError, ArithmeticError)


def _rows(batch) -> list[dict]:
    """A record batch's rows as dicts; a value with no Python form becomes `Unreadable`."""
    try:
        return batch.to_pylist()
    except _CONVERSION_ERRORS:
        pass
    rows = []
    for i in range(batch.num_rows):
        row = {}
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            try:
                row[name] = column[i].as_py()
            except _CONVERSION_ERRORS as e:
                row[name] = Unreadable(e)
        rows.append(row)
    return rows


def _row_group_start(row_group) -> int:
    """The byte offset where a Parquet row group's data begins (its first column's first
    page), which is how a row group is placed in a byte range, as Beam's reader does."""
    column = row_group.column(0)
    return column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset


class _ParquetBlockSource(_CheckedSource):
    """A Parquet file as blocks of rows (dicts), (file, [row, ...]), split by row groups.

    Reads only the columns the config names (that the file has: a row without one is
    rejected for the missing value), so a column the pipeline does not use can hold anything.
    A row group belongs to the byte range its data starts in. A value with no Python form
    rejects its row (`Unreadable`); a file pyarrow cannot read fails the run, named.

    Args:
      path: the file.
      block_rows: rows per block.
      columns: the columns to read.
    """

    def __init__(self, path: str, block_rows: int, columns: Sequence[str]):
        super().__init__(path, compression_type=CompressionTypes.AUTO, validate=False)
        self._block_rows = block_rows
        self._columns = list(columns)

    def read_records(self, file_name, range_tracker):
        import pyarrow as pa
        import pyarrow.parquet as pq

        def unreadable(e: Exception) -> InputError:
            return InputError(
                f"{file_name}: not a readable Parquet file ({_one_line(e)}). Replace it with "
                "an intact copy and rerun"
            )

        with self.open_file(file_name) as f:
            try:
                parquet = pq.ParquetFile(f)
                present = set(parquet.schema_arrow.names)
                groups = [parquet.metadata.row_group(i) for i in range(parquet.num_row_groups)]
                starts = [_row_group_start(group) for group in groups]
            except (pa.ArrowException, OSError, ValueError) as e:
                raise unreadable(e) from None
            columns = [c for c in self._columns if c in present]
            for index, start in enumerate(starts):
                if start < range_tracker.start_position():
                    continue
                if not range_tracker.try_claim(start):
                    return
                try:
                    table = parquet.read_row_group(index, columns=columns)
                except (pa.ArrowException, OSError, ValueError) as e:
                    raise unreadable(e) from None
                if not columns:  # none of the config's columns: every row lacks them
                    rows = groups[index].num_rows
                    for first in range(0, rows, self._block_rows):
                        yield file_name, [{} for _ in range(min(self._block_rows, rows - first))]
                    continue
                for batch in table.to_batches(max_chunksize=self._block_rows):
                    yield file_name, _rows(batch)


def _source_of(make_source, path: str):
    """The block source of one matched file. Beam's file source matches its path again, as a
    pattern: a file named `part[1].csv` would match nothing and be skipped without a word, so
    the wildcard characters of the name are escaped (Beam's patterns, local and gs://, read
    `[[]`, `[*]` and `[?]` as the characters themselves)."""
    return make_source(glob.escape(path))


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class MatchFilesOnce(beam.PTransform):
    """File patterns -> the `FileMetadata` of every file they match, each file once.

    Matching runs on the workers, so the job graph holds the patterns only.
    """

    def expand(self, patterns):
        return (
            patterns
            | "Match" >> fileio.MatchAll()
            | "KeyByPath" >> beam.Map(lambda metadata: (storage.canonical(metadata.path), metadata))
            | "GroupByPath" >> beam.GroupByKey()
            | "OncePerFile" >> beam.MapTuple(lambda _, same: next(iter(same)))
        )


class ReadRaw(beam.PTransform):
    """File patterns -> blocks of raw records, (source file, [record, ...]), for the format.

    A record is a CSV or JSON line (bytes), a serialized tf.Example, or a Parquet row (a dict).

    Args:
      patterns: the `--input` file patterns (local or gs://).
      config: the validated config.
      header: for CSV, the header every file must start with (`input_checks.inspect_inputs`
        returns it from `first_file`); a file with another header fails the run, named.
      block_size: records per block.
      first_file: the file the header was read from, for the error message.
    """

    def __init__(
        self,
        patterns: Sequence[str],
        config: Config,
        header: Sequence[str] | None,
        block_size: int,
        first_file: str = "the first input file",
    ):
        super().__init__()
        self._patterns = list(patterns)
        self._format = config.input.format
        self._block_size = block_size
        self._columns = config.columns()
        self._header = None
        if self._format == "csv":
            if header is None:
                raise ValueError("a CSV input needs the header inspect_inputs returned")
            self._header = CsvHeader(tuple(header), config.input.field_delimiter, first_file)

    def expand(self, pbegin):
        matched = (
            pbegin | "Patterns" >> beam.Create(self._patterns) | "MatchFiles" >> MatchFilesOnce()
        )
        if self._format in ("csv", "jsonl"):
            label = "ReadLines"
            source = functools.partial(
                _LineBlockSource, block_lines=self._block_size, header=self._header
            )
        elif self._format == "tfrecord":
            label = "ReadTFRecords"
            source = functools.partial(_TFRecordBlockSource, block_records=self._block_size)
        else:
            label = "ReadParquet"
            source = functools.partial(
                _ParquetBlockSource, block_rows=self._block_size, columns=self._columns
            )
        return matched | label >> ReadAllFiles(
            splittable=self._format != "tfrecord",
            compression_type=CompressionTypes.AUTO,
            desired_bundle_size=DESIRED_RANGE_BYTES,
            min_bundle_size=0,
            source_from_file=functools.partial(_source_of, source),
        )
