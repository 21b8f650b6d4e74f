"""Writing transformed tf.Examples: gzip'd TFRecord files whose bytes depend on the data only.

The files are the same bytes whatever the runner, the number of workers and the order in
which the records arrive: each record goes to the shard its hash names, and each shard's
records are written in the order of their hashes (a fixed pseudo-random order, so a file does
not hold one label or one user after another).

The order is made by an external sort, so memory stays flat however large a shard is:

1. Each bundle buffers its records per shard, up to a memory budget; when the budget is full,
   and when the bundle ends, each shard's buffer is sorted and written as a sorted run file
   under the run's work directory (`.work/`, deleted before the commit), and (shard, run
   file) goes on.
2. A GroupByKey of those small pairs (plus every shard number, so that a shard without
   records still gets its file) gives each shard the list of its runs.
3. Each shard's runs are merged (`heapq.merge`, reading each run as a stream) straight into
   the shard's gzip'd TFRecord file, in rounds through intermediate runs when there are more
   runs than may be open at once.

A retried bundle may leave run files that nothing names (only the runs that came through the
GroupByKey are merged); they go with `.work/`. A shard's file is written whole under its final
name in the staging prefix: a retried write rewrites the same bytes.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import os
import struct
import uuid
import zlib
from collections.abc import Iterable, Iterator

import apache_beam as beam

# Google's CRC32C in C (google-crc32c comes with apache-beam[gcp]); crcmod, which Beam's own
# TFRecord sink falls back to without python-snappy, is several times slower.
import google_crc32c
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import window
from apache_beam.utils.windowed_value import WindowedValue
from google_crc32c import value as _crc32c

from common import storage

ROWS_PER_SHARD = 250_000
"""The default number of shards gives a shard about this many rows (`default_num_shards`)."""
POD_SHARDS = 16
"""The default gives at least this many shards while each gets MIN_ROWS_PER_SHARD rows, so
that each host of a TPU Pod reads files of its own; more are rounded up to a multiple of it."""
MIN_ROWS_PER_SHARD = 2_000

BUFFER_BYTES = 64 << 20
"""Records a bundle holds, over all shards, before it writes them out as sorted runs."""
MAX_OPEN_RUNS = 128
"""Runs merged at once; more are merged in rounds through intermediate runs."""
READ_BYTES = 1 << 20
"""Bytes read at a time from each open run: a merge holds about MAX_OPEN_RUNS times this."""
WRITE_BYTES = 1 << 20
"""Records are framed and compressed in groups of at least this many bytes (whole records):
the groups depend on the records only, so the gzip stream does too."""

# A buffered record costs more than its bytes: the tuple, the digest, the list's slot.
_RECORD_OVERHEAD = 160
# A run holds (digest, record) pairs: the 8-byte digest, the record's length, the record.
_RUN_HEADER = struct.Struct("<8sQ")


def default_num_shards(rows: int) -> int:
    """The number of files of a split of `rows` examples when `--num-shards` is not given.

    About one file per ROWS_PER_SHARD rows, but at least min(POD_SHARDS, rows /
    MIN_ROWS_PER_SHARD) files, so that a TPU Pod's hosts each get files of their own; a count
    above POD_SHARDS is rounded up to a multiple of it, so that 2, 4, 8 or 16 hosts get the
    same number of files; at least 1. It depends on the number of rows only.
    """
    shards = max(
        math.ceil(rows / ROWS_PER_SHARD),
        min(POD_SHARDS, math.ceil(rows / MIN_ROWS_PER_SHARD)),
        1,
    )
    if shards > POD_SHARDS:
        shards = math.ceil(shards / POD_SHARDS) * POD_SHARDS
    return shards


def masked_crc32c(data: bytes) -> int:
    """The masked CRC32C that the TFRecord framing stores."""
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frames(records: Iterable[bytes]) -> bytes:
    """Records in the TFRecord framing: length, its masked CRC32C, data, the data's CRC."""
    parts = []
    for record in records:
        length = struct.pack("<Q", len(record))
        parts += (
            length,
            struct.pack("<I", masked_crc32c(length)),
            record,
            struct.pack("<I", masked_crc32c(record)),
        )
    return b"".join(parts)


class _FastGzipFile:
    """A file written as gzip at compression level 1: about twice as fast to write as the
    default level 6, about 10% larger on transformed examples, as fast to read.

    The CRC32C of the bytes written (`crc32c`) is computed as they are written, so that the
    commit manifest records it without reading the file again.
    """

    def __init__(self, raw):
        self._raw = raw
        self._compressor = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        self.crc32c = google_crc32c.Checksum()

    def _put(self, data: bytes) -> None:
        self.crc32c.update(data)
        self._raw.write(data)

    def write(self, data: bytes) -> None:
        self._put(self._compressor.compress(data))

    def close(self) -> None:
        self._put(self._compressor.flush())
        self._raw.close()


def _digest(record: bytes) -> bytes:
    return hashlib.blake2b(record, digest_size=8).digest()


def shard_of(digest: bytes, num_shards: int) -> int:
    """The shard a record with this digest goes to."""
    return int.from_bytes(digest, "little") % num_shards


def _create(path: str):
    return FileSystems.create(
        path, "application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED
    )


def _groups(pairs: Iterable[tuple[bytes, bytes]]) -> Iterator[list[tuple[bytes, bytes]]]:
    """Consecutive pairs in groups of at least WRITE_BYTES of records (the last one less)."""
    group: list[tuple[bytes, bytes]] = []
    size = 0
    for pair in pairs:
        group.append(pair)
        size += len(pair[1])
        if size >= WRITE_BYTES:
            yield group
            group, size = [], 0
    if group:
        yield group


def write_run(path: str, pairs: Iterable[tuple[bytes, bytes]]) -> None:
    """Writes sorted (digest, record) pairs as the run file `path` (uncompressed)."""
    pack = _RUN_HEADER.pack
    with _create(path) as f:
        for group in _groups(pairs):
            f.write(b"".join(pack(digest, len(record)) + record for digest, record in group))


def read_run(path: str) -> Iterator[tuple[bytes, bytes]]:
    """The (digest, record) pairs of a run file, read as a stream of READ_BYTES blocks."""
    header = _RUN_HEADER.size
    unpack = _RUN_HEADER.unpack_from
    with storage.open_stream(path, READ_BYTES) as f:
        data, at = b"", 0
        while True:
            if len(data) - at < header:
                data, at = data[at:], 0
                while len(data) < header and (more := f.read(READ_BYTES)):
                    data += more
                if not data:
                    return
                if len(data) < header:
                    raise OSError(f"{path}: the run file ends inside a record's header")
            digest, length = unpack(data, at)
            end = at + header + length
            if len(data) < end:
                data, at, end = data[at:], 0, end - at
                while len(data) < end and (more := f.read(max(READ_BYTES, end - len(data)))):
                    data += more
                if len(data) < end:
                    raise OSError(f"{path}: the run file ends inside a record")
            yield digest, data[at + header : end]
            at = end


def merge_runs(
    runs: list[str], work_dir: str, max_open: int = MAX_OPEN_RUNS
) -> tuple[Iterator[tuple[bytes, bytes]], list[str]]:
    """The pairs of sorted runs, merged in order, with at most `max_open` runs open at once.

    While there are more than `max_open` runs, the first ones are merged into an intermediate
    run under `work_dir`, which joins the end of the list (the runs given are left as they
    are: a retry reads them again).

    Returns:
      The merged pairs (a stream over at most `max_open` runs), and the intermediate runs,
      which the caller deletes once the stream is consumed.
    """
    if max_open < 2:
        raise ValueError(f"max_open {max_open}: merging needs at least 2 open runs")
    runs = list(runs)
    created: set[str] = set()
    while len(runs) > max_open:
        # Each merge of k runs leaves k - 1 fewer: merge just enough to end at max_open.
        count = min(max_open, len(runs) - max_open + 1)
        group, runs = runs[:count], runs[count:]
        path = storage.join(work_dir, f"merged-{uuid.uuid4().hex}.run")
        write_run(path, heapq.merge(*map(read_run, group)))
        done = created.intersection(group)
        storage.delete_files(sorted(done))  # earlier intermediate runs, read in full now
        created = (created - done) | {path}
        runs.append(path)
    return heapq.merge(*map(read_run, runs)), sorted(created)


class _SortRuns(beam.DoFn):
    """Lists of records -> (shard, a sorted run file of the shard's records), a bundle at a
    time, holding at most about `buffer_bytes` of records.

    A run's records are sorted by (digest, bytes): ties of the 64-bit hash are broken by the
    bytes, so the order is total.
    """

    def __init__(self, work_dir: str, buffer_bytes: int):
        self._work_dir = work_dir
        self._buffer_bytes = buffer_bytes

    def start_bundle(self):
        self._buffers: dict[int, list[tuple[bytes, bytes]]] = {}
        self._buffered = 0

    def process(self, records, num_shards):
        for record in records:
            digest = _digest(record)
            self._buffers.setdefault(shard_of(digest, num_shards), []).append((digest, record))
            self._buffered += len(record) + _RECORD_OVERHEAD
            if self._buffered >= self._buffer_bytes:
                yield from self._flush()

    def finish_bundle(self):
        for shard_run in self._flush():
            yield WindowedValue(
                shard_run, window.GlobalWindow().max_timestamp(), [window.GlobalWindow()]
            )

    def _flush(self) -> Iterator[tuple[int, str]]:
        buffers, self._buffers, self._buffered = self._buffers, {}, 0
        for shard in sorted(buffers):
            pairs = buffers.pop(shard)
            pairs.sort()
            path = storage.join(self._work_dir, f"{shard:05d}-{uuid.uuid4().hex}.run")
            write_run(path, pairs)
            del pairs
            yield shard, path


class _MergeShard(beam.DoFn):
    """(shard, its run files) -> the shard's gzip'd TFRecord file, its records merged in
    (digest, bytes) order; an empty gzip file for a shard without runs."""

    def __init__(
        self, prefix: str, suffix: str, work_dir: str, max_open: int, checksum_dir: str | None
    ):
        self._prefix = prefix
        self._suffix = suffix
        self._work_dir = work_dir
        self._max_open = max_open
        self._checksum_dir = checksum_dir

    def process(self, element, num_shards):
        shard, runs = element
        runs = sorted(run for run in runs if run)  # "" marks that the shard exists
        path = f"{self._prefix}-{shard:05d}-of-{num_shards:05d}{self._suffix}"
        pairs, intermediate = merge_runs(runs, self._work_dir, self._max_open)
        f = _FastGzipFile(_create(path))
        for group in _groups(pairs):
            f.write(tfrecord_frames(record for _, record in group))
        f.close()
        if self._checksum_dir:
            name = path.rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1]
            storage.write_text(
                storage.join(self._checksum_dir, name), storage.crc32c_text(f.crc32c)
            )
        storage.delete_files(intermediate)
        yield path


class WriteTFRecordLists(beam.PTransform):
    """Lists of serialized records -> gzip TFRecord files PREFIX-SSSSS-of-NNNNN SUFFIX.

    The same files `beam.io.WriteToTFRecord` reads back, written from lists of records (one
    per record batch) without Beam's per-element cost for every record. The files' bytes
    depend only on the set of records and the number of shards (see the module docstring),
    and memory stays flat: a bundle holds at most `buffer_bytes` of records, a merge at most
    `max_open` runs open.

    Args:
      file_path_prefix: the files' path up to the shard number.
      file_name_suffix: what follows the shard numbers (".tfrecord.gz").
      work_dir: where the sorted runs go; it must be deleted after the pipeline (the
        pipeline's `.work/`, deleted before the commit).
      num_shards: the number of files. 0 derives it from `rows` with `default_num_shards`.
        A shard that receives no record is written too, as an empty gzip file, so there are
        always this many.
      rows: with `num_shards` 0, a PCollection of one int, the number of records that will
        come (the pipeline's first pass counted them), read as a side input.
      buffer_bytes: records a bundle holds before it writes sorted runs.
      max_open: runs a merge reads at once.
      checksum_dir: where each file's CRC32C, computed as it is written, goes: a text file
        named like the file, holding the base64 that Cloud Storage reports (the commit
        manifest records it); None records none.
    """

    def __init__(
        self,
        file_path_prefix: str,
        file_name_suffix: str,
        work_dir: str,
        num_shards: int = 0,
        rows: beam.PCollection | None = None,
        buffer_bytes: int = BUFFER_BYTES,
        max_open: int = MAX_OPEN_RUNS,
        checksum_dir: str | None = None,
    ):
        super().__init__()
        if num_shards < 0 or (num_shards == 0 and rows is None):
            raise ValueError("give num_shards > 0, or the PCollection of the number of rows")
        self._prefix = file_path_prefix
        self._suffix = file_name_suffix
        self._work_dir = work_dir
        self._num_shards = num_shards
        self._rows = rows
        self._buffer_bytes = buffer_bytes
        self._max_open = max_open
        self._checksum_dir = checksum_dir

    def expand(self, pcoll):
        if self._num_shards:
            count = pcoll.pipeline | "NumShards" >> beam.Create([self._num_shards])
        else:
            count = self._rows | "NumShards" >> beam.Map(default_num_shards)
        num_shards = beam.pvalue.AsSingleton(count)
        runs = pcoll | "SortRuns" >> beam.ParDo(
            _SortRuns(self._work_dir, self._buffer_bytes), num_shards
        )
        every_shard = count | "EveryShard" >> beam.FlatMap(lambda n: [(s, "") for s in range(n)])
        return (
            (runs, every_shard)
            | "Flatten" >> beam.Flatten()
            | "GroupRunsByShard" >> beam.GroupByKey()
            | "MergeShards"
            >> beam.ParDo(
                _MergeShard(
                    self._prefix, self._suffix, self._work_dir, self._max_open, self._checksum_dir
                ),
                num_shards,
            )
        )
