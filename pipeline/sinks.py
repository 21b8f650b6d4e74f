"""Writing transformed tf.Examples: gzip'd TFRecord files whose bytes depend on the data only.

The files are the same bytes whatever the runner, the number of workers and the order in
which the records arrive: each record goes to the shard its hash names, and each shard's
records are written in the order of their hashes (a fixed pseudo-random order, so a file does
not hold one label or one user after another).

A record's hash is its 8-byte BLAKE2b digest: the shard is the digest read as a little-endian
integer modulo the number of shards, and the order is the digest's bytes (the same as the
digest read as a big-endian integer), ties broken by the record's bytes, so the order is total.

The order is made by an external sort, so memory stays flat however large a shard is:

1. Each bundle buffers its records per shard, up to a memory budget; when the budget is full,
   and when the bundle ends, each shard's buffer is sorted and written as a sorted run file
   under the run's work directory (`.work/`, deleted before the commit), and (shard, run
   file) goes on.
2. A GroupByKey of those small pairs (plus every shard number, so that a shard without
   records still gets its file) gives each shard the list of its runs.
3. Each shard's runs are merged (reading each run as a stream of chunks) straight into the
   shard's gzip'd TFRecord file, in rounds through intermediate runs when there are more runs
   than may be open at once.

The per-record work is done on whole arrays with numpy, not record by record in Python: the
shards and the sort keys come from the digests as arrays of 64-bit integers, a run file is
columnar (chunks of digests, lengths, then the records' bytes), a merge takes, from every open
run, the records up to the smallest of the runs' last keys and sorts them together, and the
TFRecord framing is assembled from arrays of lengths and CRCs. The compression, its checksum
and the writing of a file's bytes run in a thread of their own, beside the next group's work.

A retried bundle may leave run files that nothing names (only the runs that came through the
GroupByKey are merged); they go with `.work/`. A shard's file is written whole under its final
name in the staging prefix: a retried write rewrites the same bytes.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import os
import queue
import struct
import threading
import uuid
import zlib
from collections.abc import Iterable, Iterator

import apache_beam as beam

# Google's CRC32C in C (google-crc32c comes with apache-beam[gcp]); crcmod, which Beam's own
# TFRecord sink falls back to without python-snappy, is several times slower.
import google_crc32c
import numpy as np
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
"""Bytes read at a time from each open run, or the rest of its chunk when that is more."""
CHUNK_BYTES = 1 << 20
"""A run file's chunks hold at least this many bytes (whole records, 16 bytes each counted
for the digest and the length), the last one less: a merge holds a chunk of each open run,
so about MAX_OPEN_RUNS times this."""
WRITE_BYTES = 1 << 20
"""Records are framed and compressed in groups of at least this many bytes (whole records):
the groups depend on the records only, so the gzip stream does too."""
QUEUED_WRITES = 4
"""Groups of framed records waiting for a file's compressing thread, at most."""

# A buffered record costs more than its bytes: its digest, its place in the lists.
_RECORD_OVERHEAD = 160
# The digest's bytes read as a big-endian integer: the integers sort as the bytes do.
_KEY = np.dtype(">u8")
# A run file is a sequence of chunks: this header (the number of records, the bytes of their
# data), the records' digests (8 bytes each), their lengths (little-endian, 8 bytes each),
# then the records' bytes one after the other, in the run's order.
_CHUNK_HEADER = struct.Struct("<QQ")
_LENGTH = np.dtype("<u8")
# The TFRecord framing around each record: what ends the record before (its data's masked
# CRC32C) and what starts the next (its length, the length's masked CRC32C), in one struct.
_FRAME_JOINT = np.dtype([("data_crc", "<u4"), ("length", "<u8"), ("length_crc", "<u4")])


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


def _masked(crcs: np.ndarray) -> np.ndarray:
    """`masked_crc32c`'s masking of an array of uint32 CRC32Cs (uint32 arithmetic wraps)."""
    return ((crcs >> np.uint32(15)) | (crcs << np.uint32(17))) + np.uint32(0xA282EAD8)


_LENGTH_CRCS: dict[int, int] = {}
_LENGTH_CRCS_KEPT = 1 << 16


def _length_crcs(lengths: np.ndarray) -> np.ndarray:
    """The masked CRC32Cs of the records' 8-byte lengths, computed once per distinct length
    (a group of records has few) and kept, up to _LENGTH_CRCS_KEPT lengths."""
    if len(_LENGTH_CRCS) > _LENGTH_CRCS_KEPT:
        _LENGTH_CRCS.clear()
    distinct, which = np.unique(lengths, return_inverse=True)
    crcs = []
    for length in distinct.tolist():
        if (crc := _LENGTH_CRCS.get(length)) is None:
            crc = _LENGTH_CRCS[length] = masked_crc32c(struct.pack("<Q", length))
        crcs.append(crc)
    return np.array(crcs, np.uint32)[which.reshape(-1)]


def _lengths(records: list[bytes]) -> np.ndarray:
    return np.fromiter(map(len, records), np.int64, len(records))


def tfrecord_frames(records: Iterable[bytes]) -> bytes:
    """Records in the TFRecord framing: length, its masked CRC32C, data, the data's CRC.

    The bytes between two records (the first's CRC, the second's length and its CRC) are made
    for all records at once as an array, then joined with the records in one `bytes.join`.
    """
    records = records if isinstance(records, list) else list(records)
    count = len(records)
    if not count:
        return b""
    lengths = _lengths(records)
    joints = np.zeros(count + 1, _FRAME_JOINT)
    joints["length"][:-1] = lengths
    joints["length_crc"][:-1] = _length_crcs(lengths)
    joints["data_crc"][1:] = _masked(np.fromiter(map(_crc32c, records), np.uint32, count))
    pieces = joints.view(f"V{_FRAME_JOINT.itemsize}").tolist()
    pieces[0] = pieces[0][4:]  # no record before the first: its length and CRC
    pieces[-1] = pieces[-1][:4]  # no record after the last: its data's CRC
    parts = [b""] * (2 * count + 1)
    parts[0::2] = pieces
    parts[1::2] = records
    return b"".join(parts)


_CLOSE = object()
_ABORT = object()


class _FastGzipFile:
    """A file written as gzip at compression level 1: about twice as fast to write as the
    default level 6, about 10% larger on transformed examples, as fast to read.

    The compression, the CRC32C of the bytes written (`crc32c`, computed as they are
    written, so that the commit manifest records it without reading the file again) and the
    writing itself run in a thread of the file's own, in the order of the writes, while the
    caller makes the next group (zlib lets the other threads run while it compresses). At
    most QUEUED_WRITES groups wait for it, so memory stays flat. An error in that thread is
    raised by the next `write` or by `close`; the raw file is then left unclosed, as a
    failed write leaves it.
    """

    def __init__(self, raw):
        self._raw = raw
        self._compressor = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        self.crc32c = google_crc32c.Checksum()
        self._queue: queue.Queue = queue.Queue(QUEUED_WRITES)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._compress, name="gzip-writer", daemon=True)
        self._thread.start()

    def _put(self, data: bytes) -> None:
        self.crc32c.update(data)
        self._raw.write(data)

    def _compress(self) -> None:
        """The thread: compresses and writes each group queued, then the end of the stream
        on _CLOSE; after an error it only takes what is queued, so no writer waits."""
        while (data := self._queue.get()) is not _ABORT:
            if self._error is not None:
                if data is _CLOSE:
                    return
                continue
            try:
                if data is _CLOSE:
                    self._put(self._compressor.flush())
                    return
                self._put(self._compressor.compress(data))
            except BaseException as error:  # raised in the caller's thread
                self._error = error

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, data: bytes) -> None:
        self._raise_error()
        self._queue.put(data)

    def close(self) -> None:
        self._finish(_CLOSE)
        self._raise_error()
        self._raw.close()

    def abort(self) -> None:
        """Stops the thread without ending the stream or closing the raw file (the caller
        failed)."""
        self._finish(_ABORT)

    def _finish(self, last: object) -> None:
        if self._thread.is_alive():
            self._queue.put(last)
            self._thread.join()


def _digest(record: bytes) -> bytes:
    return hashlib.blake2b(record, digest_size=8).digest()


def _digests(records: list[bytes]) -> bytes:
    """The records' digests (`_digest`), one after the other."""
    blake2b = hashlib.blake2b
    return b"".join([blake2b(record, digest_size=8).digest() for record in records])


def shard_of(digest: bytes, num_shards: int) -> int:
    """The shard a record with this digest goes to."""
    return int.from_bytes(digest, "little") % num_shards


def _shards(digests: bytes, num_shards: int) -> np.ndarray:
    """`shard_of` each of the digests, from their bytes one after the other."""
    return np.frombuffer(digests, "<u8") % np.uint64(num_shards)


def _keys(digests: bytes) -> np.ndarray:
    """The sort keys of the digests: each read as a big-endian integer (native uint64)."""
    return np.frombuffer(digests, _KEY).astype(np.uint64)


def _take(records: list[bytes], order: np.ndarray) -> list[bytes]:
    return list(map(records.__getitem__, order.tolist()))


class _Block:
    """Records in the order of their sort keys (`_keys`): the keys as an array of uint64
    and the records as a list, the i-th key the i-th record's."""

    __slots__ = ("keys", "records")

    def __init__(self, keys: np.ndarray, records: list[bytes]):
        self.keys = keys
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def pairs(self) -> Iterator[tuple[bytes, bytes]]:
        """The (digest, record) pairs."""
        digests = self.keys.astype(_KEY).tobytes()
        return zip(
            (digests[i : i + 8] for i in range(0, len(digests), 8)), self.records, strict=True
        )


def _sort_order(keys: np.ndarray, records: list[bytes]) -> np.ndarray:
    """The order of (key, record) pairs: a stable sort of the keys, then the records of each
    run of equal keys (the same record twice, or a collision of the hash) sorted by bytes."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    same = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1]).tolist()
    first = 0
    while first < len(same):
        last = first
        while last + 1 < len(same) and same[last + 1] == same[last] + 1:
            last += 1
        start, stop = same[first], same[last] + 2
        order[start:stop] = sorted(order[start:stop].tolist(), key=records.__getitem__)
        first = last + 1
    return order


def _sorted_block(keys: np.ndarray, records: list[bytes]) -> _Block:
    order = _sort_order(keys, records)
    return _Block(keys[order], _take(records, order))


def _cuts(sizes: np.ndarray, limit: int, carry: int = 0) -> tuple[list[int], int]:
    """Consecutive items in groups of at least `limit` of their sizes, the first group
    starting with `carry` already: the ends (exclusive) of the groups closed, and the size of
    the last group, left open."""
    totals = np.cumsum(sizes, dtype=np.int64)
    if limit <= 0:  # every item closes its group
        return list(range(1, len(totals) + 1)), 0 if len(totals) else carry
    ends: list[int] = []
    start = -carry  # the total before the open group's first item, less what it carries
    while (end := int(np.searchsorted(totals, start + limit, "left"))) < len(totals):
        ends.append(end + 1)
        start = int(totals[end])
    return ends, (int(totals[-1]) if len(totals) else 0) - start


def _create(path: str):
    return FileSystems.create(
        path, "application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED
    )


def _blocks(run: _Block | Iterable[_Block] | Iterable[tuple[bytes, bytes]]) -> Iterator[_Block]:
    """A sorted run as blocks: a block, blocks, or (digest, record) pairs (in blocks of 4096)."""
    if isinstance(run, _Block):
        yield run
        return
    items = iter(run)
    first = next(items, None)
    if first is None:
        return
    items = itertools.chain([first], items)
    if isinstance(first, _Block):
        yield from items
        return
    while batch := list(itertools.islice(items, 4096)):
        digests = b"".join(digest for digest, _ in batch)
        if len(digests) != 8 * len(batch):
            raise ValueError("a run's digests are 8 bytes each")
        yield _Block(_keys(digests), [record for _, record in batch])


def _chunk(block: _Block, start: int, stop: int) -> bytes:
    """Records start:stop of `block` as a run file's chunk (see _CHUNK_HEADER)."""
    records = block.records[start:stop]
    data = b"".join(records)
    return b"".join(
        (
            _CHUNK_HEADER.pack(len(records), len(data)),
            block.keys[start:stop].astype(_KEY).tobytes(),
            _lengths(records).astype(_LENGTH).tobytes(),
            data,
        )
    )


def write_run(path: str, run: _Block | Iterable[_Block] | Iterable[tuple[bytes, bytes]]) -> None:
    """Writes a sorted run as the run file `path` (uncompressed), in chunks of at least
    CHUNK_BYTES: `run` is a block, blocks, or (digest, record) pairs, in order."""
    with _create(path) as f:
        for block in _blocks(run):
            if not len(block):
                continue
            sizes = _lengths(block.records) + 16
            ends, _ = _cuts(sizes, CHUNK_BYTES)
            if not ends or ends[-1] < len(block):
                ends.append(len(block))
            for start, stop in zip([0, *ends], ends, strict=False):
                f.write(_chunk(block, start, stop))


class _Reader:
    """Reads exact numbers of bytes from a stream, READ_BYTES or more at a time."""

    def __init__(self, f, path: str):
        self._f = f
        self._path = path
        self._data = b""
        self._at = 0

    def read(self, size: int, what: str) -> bytes | None:
        """The next `size` bytes; None at the end of the stream; OSError if the stream ends
        inside them (naming `what` they are)."""
        if len(self._data) - self._at >= size:
            self._at += size
            return self._data[self._at - size : self._at]
        parts = [self._data[self._at :]]
        have = len(parts[0])
        while have < size and (more := self._f.read(max(READ_BYTES, size - have))):
            parts.append(more)
            have += len(more)
        data = b"".join(parts)
        if not data:
            return None
        if have < size:
            raise OSError(f"{self._path}: the run file ends inside {what}")
        self._data, self._at = data[size:], 0  # keeps only what is not returned
        return data if have == size else data[:size]


def _read_blocks(path: str) -> Iterator[_Block]:
    """The chunks of a run file as blocks, read as a stream (a chunk at a time)."""
    with storage.open_stream(path, READ_BYTES) as f:
        reader = _Reader(f, path)
        while (header := reader.read(_CHUNK_HEADER.size, "a chunk's header")) is not None:
            count, size = _CHUNK_HEADER.unpack(header)
            body = reader.read(16 * count + size, "a record") or b""
            if len(body) < 16 * count + size:
                raise OSError(f"{path}: the run file ends inside a record")
            ends = np.cumsum(np.frombuffer(body, _LENGTH, count, 8 * count), dtype=np.int64)
            ends += 16 * count
            starts = np.concatenate(([16 * count], ends[:-1]))
            records = [body[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
            yield _Block(_keys(body[: 8 * count]), records)


def read_run(path: str) -> Iterator[tuple[bytes, bytes]]:
    """The (digest, record) pairs of a run file, read as a stream."""
    for block in _read_blocks(path):
        yield from block.pairs()


class _Head:
    """A run being merged: its current block and the position of its next record in it."""

    __slots__ = ("block", "at", "rest")

    def __init__(self, blocks: Iterator[_Block]):
        self.rest = blocks
        self.block: _Block | None = None
        self.at = 0

    def advance(self) -> bool:
        """Moves to the next block when this one is taken; False when the run is done."""
        while self.block is None or self.at == len(self.block):
            self.block, self.at = next(self.rest, None), 0
            if self.block is None:
                return False
        return True

    def last(self) -> tuple[int, bytes]:
        return int(self.block.keys[-1]), self.block.records[-1]

    def take_up_to(self, key: int, record: bytes) -> tuple[np.ndarray, list[bytes]]:
        """Takes the block's next records whose (key, record) is at most (key, record)."""
        keys, start = self.block.keys, self.at
        stop = start + int(np.searchsorted(keys[start:], np.uint64(key), "left"))
        equal = start + int(np.searchsorted(keys[start:], np.uint64(key), "right"))
        if equal > stop:  # records of the same key are in the order of their bytes
            stop = bisect.bisect_right(self.block.records, record, stop, equal)
        self.at = stop
        return keys[start:stop], self.block.records[start:stop]


def _merge_blocks(runs: list[Iterator[_Block]]) -> Iterator[_Block]:
    """The records of sorted runs, merged in (key, record) order, as blocks.

    Each step takes, from every run's current block, the records up to the smallest of
    the blocks' last (key, record): everything after it in any run is at least as large, so
    the records taken, sorted together, come next. The run with the smallest last record has
    its block taken whole, so each step moves at least one run to its next block.
    """
    heads = [head for head in map(_Head, runs) if head.advance()]
    while len(heads) > 1:
        key, record = min(head.last() for head in heads)
        taken = [head.take_up_to(key, record) for head in heads]
        keys = np.concatenate([keys for keys, _ in taken])
        records = list(itertools.chain.from_iterable(records for _, records in taken))
        del taken
        if not records:  # the smallest last record was not taken: a run is out of order
            raise ValueError("a run to merge is not sorted by (digest, bytes)")
        yield _sorted_block(keys, records)
        heads = [head for head in heads if head.advance()]
    for head in heads:
        yield _Block(head.block.keys[head.at :], head.block.records[head.at :])
        yield from head.rest


def _merge_run_files(
    runs: list[str], work_dir: str, max_open: int
) -> tuple[Iterator[_Block], list[str]]:
    """`merge_runs`, as blocks."""
    if max_open < 2:
        raise ValueError(f"max_open {max_open}: merging needs at least 2 open runs")
    runs = list(runs)
    created: set[str] = set()
    while len(runs) > max_open:
        # Each merge of k runs leaves k - 1 fewer: merge just enough to end at max_open.
        count = min(max_open, len(runs) - max_open + 1)
        group, runs = runs[:count], runs[count:]
        path = storage.join(work_dir, f"merged-{uuid.uuid4().hex}.run")
        write_run(path, _merge_blocks([_read_blocks(run) for run in group]))
        done = created.intersection(group)
        storage.delete_files(sorted(done))  # earlier intermediate runs, read in full now
        created = (created - done) | {path}
        runs.append(path)
    return _merge_blocks([_read_blocks(run) for run in runs]), sorted(created)


def merge_runs(
    runs: list[str], work_dir: str, max_open: int = MAX_OPEN_RUNS
) -> tuple[Iterator[tuple[bytes, bytes]], list[str]]:
    """The pairs of sorted runs, merged in order, with at most `max_open` runs open at once.

    While there are more than `max_open` runs, the first ones are merged into an intermediate
    run under `work_dir`, which joins the end of the list (the runs given are left as they
    are: a retry reads them again).

    Returns:
      The merged (digest, record) pairs (a stream over at most `max_open` runs), and the
      intermediate runs, which the caller deletes once the stream is consumed.
    """
    blocks, created = _merge_run_files(runs, work_dir, max_open)
    return itertools.chain.from_iterable(block.pairs() for block in blocks), created


def _record_groups(blocks: Iterable[_Block]) -> Iterator[list[bytes]]:
    """The blocks' records in groups of at least WRITE_BYTES of records (the last one less):
    the same groups however the records come in blocks."""
    group: list[bytes] = []
    size = 0
    for block in blocks:
        ends, open_size = _cuts(_lengths(block.records), WRITE_BYTES, size)
        start = 0
        for end in ends:
            group += block.records[start:end]
            yield group
            group, start = [], end
        group += block.records[start:]
        size = open_size
    if group:
        yield group


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
        self._buffers: dict[int, list[_Block]] = {}
        self._buffered = 0

    def process(self, records, num_shards):
        """Buffers the records, writing the buffers out as runs each time they reach the
        budget (at the same records as one record at a time would)."""
        records = list(records)
        if not records:
            return
        digests = _digests(records)
        keys, shards = _keys(digests), _shards(digests, num_shards)
        ends, buffered = _cuts(
            _lengths(records) + _RECORD_OVERHEAD, self._buffer_bytes, self._buffered
        )
        start = 0
        for end in ends:
            self._add(keys[start:end], shards[start:end], records[start:end])
            yield from self._flush()
            start = end
        self._add(keys[start:], shards[start:], records[start:])
        self._buffered = buffered

    def finish_bundle(self):
        for shard_run in self._flush():
            yield WindowedValue(
                shard_run, window.GlobalWindow().max_timestamp(), [window.GlobalWindow()]
            )

    def _add(self, keys: np.ndarray, shards: np.ndarray, records: list[bytes]) -> None:
        """Appends the records to their shards' buffers (in the order they came)."""
        if not records:
            return
        order = np.argsort(shards, kind="stable")
        present, starts = np.unique(shards[order], return_index=True)
        stops = [*starts[1:].tolist(), len(records)]
        records = _take(records, order)
        for shard, start, stop in zip(present.tolist(), starts.tolist(), stops, strict=True):
            block = _Block(keys[order[start:stop]], records[start:stop])
            self._buffers.setdefault(shard, []).append(block)

    def _flush(self) -> Iterator[tuple[int, str]]:
        buffers, self._buffers, self._buffered = self._buffers, {}, 0
        for shard in sorted(buffers):
            blocks = buffers.pop(shard)
            keys = np.concatenate([block.keys for block in blocks])
            records = list(itertools.chain.from_iterable(block.records for block in blocks))
            del blocks
            run = _sorted_block(keys, records)
            del keys, records
            path = storage.join(self._work_dir, f"{shard:05d}-{uuid.uuid4().hex}.run")
            write_run(path, run)
            del run
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
        blocks, intermediate = _merge_run_files(runs, self._work_dir, self._max_open)
        f = _FastGzipFile(_create(path))
        try:
            for group in _record_groups(blocks):
                f.write(tfrecord_frames(group))
        except BaseException:
            f.abort()
            raise
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
        # The output types are declared: Beam would infer them from the bytecode.
        runs = pcoll | "SortRuns" >> beam.ParDo(
            _SortRuns(self._work_dir, self._buffer_bytes), num_shards
        ).with_output_types(tuple[int, str])
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
            ).with_output_types(str)
        )
