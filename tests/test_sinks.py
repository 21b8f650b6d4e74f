"""The TFRecord writer: standard TFRecord framing, gzip'd, in the number of files asked for,
the same bytes however the records arrive, sorted by an external sort whose merges keep a
bounded number of runs open."""

import contextlib
import glob
import os
import random

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline

from common import storage
from pipeline import sinks
from pipeline.sinks import WriteTFRecordLists, default_num_shards, tfrecord_frames

pytestmark = pytest.mark.pipeline_env


def test_tfrecord_frames_match_tensorflows_writer(tmp_path):
    records = [b"", b"x", b"a longer record \x00\xff" * 50]
    path = str(tmp_path / "reference.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    with open(path, "rb") as f:
        assert tfrecord_frames(records) == f.read()


def _write(tmp_path, name, lists, **kwargs):
    """Writes `lists` with WriteTFRecordLists; returns {file name after PREFIX: bytes}."""
    prefix = str(tmp_path / name / "data" / "train")
    work_dir = str(tmp_path / name / ".work")
    with TestPipeline() as p:
        _ = p | beam.Create(lists) | WriteTFRecordLists(prefix, ".tfrecord.gz", work_dir, **kwargs)
    return {f[len(prefix) :]: open(f, "rb").read() for f in sorted(glob.glob(prefix + "*"))}


def _read(tmp_path, name):
    files = sorted(glob.glob(str(tmp_path / name / "data" / "train*")))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def test_lists_of_records_are_written_once_each_into_the_shards_asked_for(tmp_path):
    lists = [[f"record {i}-{j}".encode() for j in range(i % 4)] for i in range(20)]
    written = _write(tmp_path, "out", lists, num_shards=4)
    assert list(written) == [f"-{i:05d}-of-00004.tfrecord.gz" for i in range(4)]
    assert sorted(_read(tmp_path, "out")) == sorted(r for records in lists for r in records)


def test_a_shard_without_records_is_an_empty_gzip_file(tmp_path):
    written = _write(tmp_path, "out", [[b"one record"]], num_shards=3)
    assert len(written) == 3
    assert sorted(len(data) for data in written.values())[:2] == [20, 20]  # EMPTY_SHARD_BYTES


def test_the_same_bytes_however_the_records_arrive_and_however_small_the_buffer(tmp_path):
    # A buffer of a few records and merges of 2 runs at a time write many runs per shard
    # and merge them in rounds: the files are the same bytes as with one run per shard.
    records = [f"record {i}".encode() * (i % 5 + 1) for i in range(500)]
    records += records[:3]  # the same record twice is written twice
    arrivals = {
        "in order, in lists of 7": ([records[i : i + 7] for i in range(0, 503, 7)], {}),
        "reversed, one list": ([records[::-1]], {}),
        "interleaved, tiny buffer": (
            [records[i::10] for i in range(10)],
            {"buffer_bytes": 2000, "max_open": 2},
        ),
    }
    written = {}
    for name, (lists, kwargs) in arrivals.items():
        name = name.replace(" ", "_").replace(",", "")
        written[name] = _write(tmp_path, name, lists, num_shards=3, **kwargs)
        assert sorted(_read(tmp_path, name)) == sorted(records)
    runs = glob.glob(str(tmp_path / "interleaved_tiny_buffer" / ".work" / "*.run"))
    assert len(runs) > 30  # every flush wrote a run per shard
    first, *others = written.values()
    assert sorted(first) == [f"-{i:05d}-of-00003.tfrecord.gz" for i in range(3)]
    assert all(len(data) > 1000 for data in first.values())  # every shard gets records
    for other in others:
        assert other == first


def test_the_default_number_of_files_comes_from_the_rows_counted(tmp_path):
    prefix = str(tmp_path / "data" / "train")
    with TestPipeline() as p:
        rows = p | "Rows" >> beam.Create([4500])
        _ = (
            p
            | beam.Create([[b"a", b"b"], [b"c"]])
            | WriteTFRecordLists(prefix, ".tfrecord.gz", str(tmp_path / ".work"), rows=rows)
        )
    names = sorted(os.path.basename(f) for f in glob.glob(prefix + "*"))
    assert names == [f"train-{i:05d}-of-00003.tfrecord.gz" for i in range(3)]


def test_default_number_of_shards():
    assert [default_num_shards(rows) for rows in (0, 1, 2000, 2001, 31_999)] == [1, 1, 1, 2, 16]
    assert default_num_shards(32_000) == 16  # the most 2,000-row shards: a Pod's hosts
    assert default_num_shards(4_000_000) == 16  # 250,000 rows each
    assert default_num_shards(4_000_001) == 32  # 17, rounded up to a multiple of 16
    assert default_num_shards(20_000_000) == 80


def _sorted_pairs(count, seed):
    rng = random.Random(seed)
    records = [bytes(rng.randrange(256) for _ in range(rng.randrange(40))) for _ in range(count)]
    return sorted((sinks._digest(r), r) for r in records)


@pytest.fixture
def count_open_runs(monkeypatch):
    """Counts the run files open at once; returns a dict with the most seen, `peak`."""
    seen = {"open": 0, "peak": 0}
    real_open = storage.open_stream

    @contextlib.contextmanager
    def open_stream(path, buffer_bytes):
        with real_open(path, buffer_bytes) as f:
            seen["open"] += 1
            seen["peak"] = max(seen["peak"], seen["open"])
            try:
                yield f
            finally:
                seen["open"] -= 1

    monkeypatch.setattr(storage, "open_stream", open_stream)
    return seen


@pytest.mark.parametrize("max_open", [2, 3, 8])
def test_runs_merge_in_rounds_with_at_most_max_open_runs_open(tmp_path, count_open_runs, max_open):
    runs, every = [], []
    for i in range(9):
        pairs = _sorted_pairs(50 + i, seed=i)
        every += pairs
        runs.append(str(tmp_path / f"run-{i}.run"))
        sinks.write_run(runs[-1], pairs)
    merged, intermediate = sinks.merge_runs(runs, str(tmp_path / "merged"), max_open)
    assert list(merged) == sorted(every)
    assert count_open_runs["peak"] <= max_open
    # The intermediate runs of the last merge are the caller's to delete; earlier ones are
    # deleted once merged.
    assert 0 < len(intermediate) <= max_open if max_open < 9 else not intermediate
    assert sorted(glob.glob(str(tmp_path / "merged" / "*"))) == intermediate
    assert all(os.path.exists(run) for run in runs)  # a retry reads them again


def test_a_run_is_read_back_across_block_boundaries_on_cloud_storage(gcs_root, monkeypatch):
    monkeypatch.setattr(sinks, "READ_BYTES", 7)  # headers and records span blocks
    pairs = _sorted_pairs(200, seed=1) + [(b"\xff" * 8, b"r" * 100)]
    path = storage.join(gcs_root, "runs", "a.run")
    sinks.write_run(path, pairs)
    assert list(sinks.read_run(path)) == pairs
    storage.write_bytes(path, storage.read_bytes(path)[:-3])
    with pytest.raises(OSError, match="a.run: the run file ends inside a record"):
        list(sinks.read_run(path))


def test_each_files_crc32c_is_recorded_as_it_is_written(tmp_path):
    from common import storage

    checksums = tmp_path / "crc32c"
    lists = [[f"record {i}-{j}".encode() * 50 for j in range(i % 7)] for i in range(300)]
    written = _write(tmp_path, "out", lists, num_shards=3, checksum_dir=str(checksums))
    recorded = {p.name: p.read_text() for p in checksums.iterdir()}
    prefix = str(tmp_path / "out" / "data" / "train")
    assert recorded == {f"train{suffix}": storage.crc32c(prefix + suffix) for suffix in written}
    assert len(set(recorded.values())) == 3


def _framed_one_at_a_time(records):
    """The TFRecord framing written record by record, as the format describes it."""
    import struct

    out = []
    for record in records:
        length = struct.pack("<Q", len(record))
        out += [length, struct.pack("<I", sinks.masked_crc32c(length))]
        out += [record, struct.pack("<I", sinks.masked_crc32c(record))]
    return b"".join(out)


def test_the_framing_of_many_records_at_once_is_the_framing_of_each(tmp_path):
    rng = random.Random(7)
    lengths = [
        *range(300),
        0,
        0,
        1,
        65_535,
        65_536,
        70_000,
        *(rng.randrange(2000) for _ in range(300)),
    ]
    records = [rng.randbytes(n) for n in lengths]
    path = str(tmp_path / "reference.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    with open(path, "rb") as f:
        assert tfrecord_frames(records) == _framed_one_at_a_time(records) == f.read()
    assert tfrecord_frames(iter(records[:5])) == _framed_one_at_a_time(records[:5])
    for one in ([b""], [b"x"], []):
        assert tfrecord_frames(one) == _framed_one_at_a_time(one)


def _reference_files(records, num_shards, digest):
    """The files the writer made record by record: each shard's (digest, record) pairs in
    plain sorted order, framed and compressed in groups of at least WRITE_BYTES of records."""
    import zlib

    shards = {shard: [] for shard in range(num_shards)}
    for record in records:
        shards[int.from_bytes(digest(record), "little") % num_shards].append(
            (digest(record), record)
        )
    files = {}
    for shard, pairs in shards.items():
        compressor = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        out, group, size = [], [], 0
        for _, record in sorted(pairs):
            group.append(record)
            size += len(record)
            if size >= sinks.WRITE_BYTES:
                out.append(compressor.compress(_framed_one_at_a_time(group)))
                group, size = [], 0
        out.append(compressor.compress(_framed_one_at_a_time(group)) + compressor.flush())
        name = f"-{shard:05d}-of-{num_shards:05d}.tfrecord.gz"
        files[name] = (b"".join(out), _framed_one_at_a_time(r for _, r in sorted(pairs)))
    return files


def _tricky_records(count, seed):
    """Records of many lengths, with empty ones, copies, and records that begin others."""
    rng = random.Random(seed)
    records = [rng.randbytes(rng.randrange(60)) for _ in range(count)]
    records += [b"", b"", b"a", b"ab", b"abc", b"a\x00", b"b"] + records[:20]
    rng.shuffle(records)
    return records


@pytest.mark.parametrize(
    "digest_bytes",
    [
        pytest.param(None, id="blake2b"),
        pytest.param(1, id="one-byte digests: many equal"),
        pytest.param(0, id="one digest for all"),
    ],
)
def test_the_files_are_the_bytes_of_the_record_by_record_writer(
    tmp_path, monkeypatch, digest_bytes
):
    import gzip
    import hashlib

    digest = sinks._digest
    if digest_bytes is not None:
        # Digests of one byte repeated (or all the same) make ties of the sort key, which
        # the record's bytes break, across runs and across the chunks of a run.
        def digest(record):
            return hashlib.blake2b(record, digest_size=1).digest() * 8 if digest_bytes else b"k" * 8

        monkeypatch.setattr(sinks, "_digest", digest)
        monkeypatch.setattr(sinks, "_digests", lambda records: b"".join(map(digest, records)))
    monkeypatch.setattr(sinks, "WRITE_BYTES", 300)  # many groups per file
    monkeypatch.setattr(sinks, "CHUNK_BYTES", 200)  # many chunks per run
    monkeypatch.setattr(sinks, "READ_BYTES", 64)
    records = _tricky_records(600, seed=3)
    lists = [records[i::13] for i in range(13)]
    written = _write(tmp_path, "out", lists, num_shards=3, buffer_bytes=3000, max_open=3)
    assert len(glob.glob(str(tmp_path / "out" / ".work" / "*.run"))) > 20
    reference = _reference_files(records, 3, digest)
    assert sorted(written) == sorted(reference)
    for name, data in written.items():
        compressed, framed = reference[name]
        assert gzip.decompress(data) == framed
        assert data == compressed


def test_runs_merge_in_order_across_chunks_with_equal_digests(tmp_path, monkeypatch):
    monkeypatch.setattr(sinks, "CHUNK_BYTES", 40)
    rng = random.Random(5)
    runs, every = [], []
    for i in range(7):
        pairs = sorted(
            (bytes([rng.randrange(3)]) * 8, rng.randbytes(rng.randrange(6))) for _ in range(60)
        )
        every += pairs
        runs.append(str(tmp_path / f"run-{i}.run"))
        sinks.write_run(runs[-1], pairs)
    assert list(sinks.read_run(runs[0])) == sorted(every[:60])
    for max_open in (2, 7):
        merged, _ = sinks.merge_runs(runs, str(tmp_path / f"merged-{max_open}"), max_open)
        assert list(merged) == sorted(every)


def test_an_error_while_compressing_is_raised_by_the_writer_without_a_hang():
    class Raw:
        def __init__(self):
            self.writes = 0

        def write(self, data):
            self.writes += 1
            raise OSError(28, "No space left on device")

        def close(self):
            raise AssertionError("a failed file is not closed (not committed)")

    raw = Raw()
    f = sinks._FastGzipFile(raw)
    with pytest.raises(OSError, match="No space left"):
        for _ in range(10 * sinks.QUEUED_WRITES):  # more than the queue holds
            f.write(random.randbytes(1 << 16))  # incompressible: the first write reaches raw
        f.close()
    assert raw.writes == 1  # nothing is compressed or written after the error
    f.abort()  # the caller's clean-up after an error returns


def test_an_error_at_the_end_of_the_stream_is_raised_by_close():
    class Raw:
        def write(self, data):
            if not data:
                return
            raise OSError(5, "Input/output error")

    f = sinks._FastGzipFile(Raw())
    f.write(b"small")  # compressed into the stream's buffer: nothing written yet
    with pytest.raises(OSError, match="Input/output error"):
        f.close()


def test_groups_close_at_the_records_a_record_by_record_count_closes_them():
    import numpy as np

    def one_at_a_time(sizes, limit, carry):
        ends, size = [], carry
        for i, item in enumerate(sizes):
            size += item
            if size >= limit:
                ends.append(i + 1)
                size = 0
        return ends, size

    rng = random.Random(11)
    for _ in range(2000):
        sizes = [rng.choice([0, 0, 1, 5, 40, 200]) for _ in range(rng.randrange(30))]
        limit, carry = rng.choice([0, 1, 3, 50, 300, 1000]), rng.choice([0, 10, 299])
        expected = one_at_a_time(sizes, limit, carry)
        assert sinks._cuts(np.array(sizes, np.int64), limit, carry) == expected
