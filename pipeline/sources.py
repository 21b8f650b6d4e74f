"""Reading raw files in Beam: the user's file patterns -> blocks of raw records of one file.

The job graph carries the `--input` patterns, not the files they match: the workers match
them when the job runs, and one splittable read covers every matched file. So the job
description has the same size over 2 files and over 20,000 (one `beam.io.Read` per file made
it grow with the file count until Dataflow refused it). A file that two patterns match is
read once.

A block is (source file, [record, ...]). CSV and JSON lines (bytes) come from a splittable
block reader (Beam's `ReadAllFiles` over `_LineBlockSource`, by byte ranges of each file);
serialized tf.Examples and Parquet rows (dicts) from Beam's readers, batched per file.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filebasedsource import FileBasedSource, ReadAllFiles
from apache_beam.io.filesystem import CompressionTypes

from common.config import Config
from pipeline.input_checks import InputError, csv_header, header_mismatch

# Byte ranges a worker reads at a time from an uncompressed file (Beam's ReadAllFromText
# uses the same); a compressed file is read whole.
DESIRED_RANGE_BYTES = 64 << 20


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
        except UnicodeDecodeError:
            names = None
        if names != self.names:
            raise InputError(header_mismatch(path, self.first_file))


class _LineBlockSource(FileBasedSource):
    """A text file as blocks of lines: (file, [line, ...]), newlines removed.

    Splittable like ReadFromText: a line belongs to the range its first byte falls in, and
    each line is claimed from the range tracker, so dynamic splits never read a line twice.
    Lines end at "\n" (a "\r" before it is removed when the line is decoded). Compressed
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


class MatchFilesOnce(beam.PTransform):
    """File patterns -> the `FileMetadata` of every file they match, each file once.

    Matching runs on the workers, so the job graph holds the patterns only.
    """

    def expand(self, patterns):
        return (
            patterns
            | "Match" >> fileio.MatchAll()
            | "KeyByPath" >> beam.Map(lambda metadata: (metadata.path, metadata))
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
        self._header = None
        if self._format == "csv":
            if header is None:
                raise ValueError("a CSV input needs the header inspect_inputs returned")
            self._header = CsvHeader(tuple(header), config.input.field_delimiter, first_file)

    def expand(self, pbegin):
        files = (
            pbegin | "Patterns" >> beam.Create(self._patterns) | "MatchFiles" >> MatchFilesOnce()
        )
        if self._format in ("csv", "jsonl"):
            return files | "ReadLines" >> ReadAllFiles(
                splittable=True,
                compression_type=CompressionTypes.AUTO,
                desired_bundle_size=DESIRED_RANGE_BYTES,
                min_bundle_size=0,
                source_from_file=functools.partial(
                    _LineBlockSource, block_lines=self._block_size, header=self._header
                ),
            )
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
