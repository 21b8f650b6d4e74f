"""The reader: every line of every matched file is read exactly once, however the files are
matched and their byte ranges split, and a CSV file with another header stops the run."""

import bz2
import gzip
import itertools
import lzma
import zlib

import apache_beam as beam
import pytest
from apache_beam.io import source_test_utils
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from common.config import parse_config
from pipeline import sinks, sources
from pipeline.input_files import InputError
from pipeline.sources import CsvHeader, ReadRaw, _LineBlockSource

pytestmark = pytest.mark.pipeline_env

CONFIG_DATA = {
    "split": {"key": "user_id"},
    "label": {"name": "clicked"},
    "feature": [{"name": "item_id", "type": "categorical"}],
}
CONFIG = parse_config(CONFIG_DATA)
HEADER = ("user_id", "item_id", "clicked")


@pytest.fixture(params=["plain", "gzip", "no final newline"])
def text_file(request, tmp_path):
    lines = [b"user_id,item_id"] + [f"u{i},{'x' * (i % 7)}".encode() for i in range(300)]
    data = b"\n".join(lines) + (b"" if request.param == "no final newline" else b"\n")
    if request.param == "gzip":
        path = tmp_path / "lines.csv.gz"
        path.write_bytes(gzip.compress(data))
    else:
        path = tmp_path / "lines.csv"
        path.write_bytes(data)
    return str(path), lines[1:]


def test_block_source_reads_every_line_once(text_file):
    path, lines = text_file
    header = CsvHeader(("user_id", "item_id"), ",", path)
    source = _LineBlockSource(path, block_lines=64, header=header)
    read = [line for _, block in source_test_utils.read_from_source(source) for line in block]
    assert read == lines
    blocks = [block for _, block in source_test_utils.read_from_source(source)]
    assert [len(b) for b in blocks] == [64, 64, 64, 64, 44]


def test_block_source_splits_and_dynamic_splits_lose_and_repeat_nothing(tmp_path):
    lines = [b"header"] + [f"line {i} {'y' * (i % 5)}".encode() for i in range(40)]
    path = tmp_path / "lines.txt"
    path.write_bytes(b"\n".join(lines) + b"\n")
    header = CsvHeader(("header",), ",", str(path))
    source = _LineBlockSource(str(path), block_lines=1, header=header)
    splits = [(s.source, s.start_position, s.stop_position) for s in source.split(37)]
    assert len(splits) > 5
    source_test_utils.assert_sources_equal_reference_source((source, None, None), splits)
    source_test_utils.assert_split_at_fraction_exhaustive(source)


@pytest.mark.parametrize("block_lines", [2, 3, 7])
def test_a_split_at_any_byte_after_any_block_loses_and_repeats_no_line(tmp_path, block_lines):
    # A block's lines are claimed together: a split may fall inside a block not yet read, and
    # none inside one already read. Beam's exhaustive check counts records (here, blocks),
    # which a split inside a block changes, so this one counts lines.
    lines = [b"header"] + [f"line {i} {'y' * (i % 5)}".encode() for i in range(40)]
    path = tmp_path / "lines.txt"
    path.write_bytes(b"\n".join(lines) + b"\n")
    whole = _LineBlockSource(str(path), block_lines, CsvHeader(("header",), ",", str(path)))
    (bundle,) = whole.split(1 << 30)
    source, size = bundle.source, bundle.stop_position

    def read(tracker, blocks=None):
        reader = source.read(tracker)
        return [line for _, block in itertools.islice(reader, blocks) for line in block], reader

    for before in range(0, 40 // block_lines + 2):
        for at in range(1, size + 1):
            tracker = source.get_range_tracker(0, size)
            primary, reader = read(tracker, before)
            split = tracker.try_split(at)
            primary += [line for _, block in reader for line in block]
            residual = read(source.get_range_tracker(at, size))[0] if split else []
            assert primary + residual == lines[1:], (before, at, split)


def test_block_source_without_a_header_reads_the_first_line_too(tmp_path):
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n')
    source = _LineBlockSource(str(path), block_lines=10)
    assert list(source_test_utils.read_from_source(source)) == [
        (str(path), [b'{"a": 1}', b'{"a": 2}'])
    ]


@pytest.mark.parametrize(
    "first_line",
    [b"item_id,user_id,clicked\n", b"user_id,item_id\n", b"user_id,item_\xff,clicked\n"],
)
def test_a_file_with_another_header_is_named(tmp_path, first_line):
    path = tmp_path / "other.csv"
    path.write_bytes(first_line + b"u1,i1,1\n")
    source = _LineBlockSource(str(path), 10, CsvHeader(HEADER, ",", "first.csv"))
    with pytest.raises(InputError, match=r"other\.csv: its header differs from first\.csv's"):
        list(source_test_utils.read_from_source(source))


def test_a_compressed_file_of_nothing_is_named(tmp_path):
    # A 0-byte file is refused by the launcher, from its size; this one has 20 bytes.
    path = tmp_path / "empty.csv.gz"
    path.write_bytes(gzip.compress(b""))
    source = _LineBlockSource(str(path), 10, CsvHeader(HEADER, ",", "first.csv"))
    with pytest.raises(InputError, match=r"empty\.csv\.gz: the file is empty"):
        list(source_test_utils.read_from_source(source))


def test_the_header_check_accepts_a_byte_order_mark_and_crlf(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfuser_id,item_id,clicked\r\nu1,i1,1\r\n")
    source = _LineBlockSource(str(path), 10, CsvHeader(HEADER, ",", "first.csv"))
    assert [b for _, block in source_test_utils.read_from_source(source) for b in block] == [
        b"u1,i1,1\r"  # the "\r" is removed when the line is decoded
    ]


def test_read_raw_reads_each_line_of_each_file_once(tmp_path, monkeypatch):
    # Byte ranges of 64 bytes: every plain file is split into several ranges, read apart.
    monkeypatch.setattr(sources, "DESIRED_RANGE_BYTES", 64)
    expected = []
    for i in range(6):
        lines = [f"u{i}-{j},{'i' * (j % 4)}{j},{j % 2}".encode() for j in range(25 + i)]
        data = b"\n".join([b"user_id,item_id,clicked", *lines]) + b"\n"
        name = tmp_path / f"part-{i}.csv{'.gz' if i % 3 == 0 else ''}"
        name.write_bytes(gzip.compress(data) if i % 3 == 0 else data)
        expected += [(str(name), line) for line in lines]
    patterns = [str(tmp_path / "part-*"), str(tmp_path / "part-1.csv"), str(tmp_path / "*-2.csv")]
    with TestPipeline() as p:
        lines = (
            p
            | ReadRaw(patterns, CONFIG, list(HEADER), block_size=4, first_file="part-0.csv.gz")
            | beam.FlatMap(lambda block: [(block[0], line) for line in block[1]])
        )
        assert_that(lines, equal_to(expected))


@pytest.mark.parametrize("fmt", ["csv", "tfrecord"])
def test_files_whose_names_hold_wildcard_characters_are_read(tmp_path, fmt):
    # Beam matches each file's path again as a pattern: unescaped, `a[1].csv` matched nothing
    # and its rows were skipped without a word.
    names = ["a[1]", "b*x", "c?", "d]"]
    expected = []
    for i, name in enumerate(names):
        lines = [f"u{i}-{j},i{j},{j % 2}".encode() for j in range(5 + i)]
        path = tmp_path / f"{name}.{fmt}"
        if fmt == "csv":
            path.write_bytes(b"\n".join([b"user_id,item_id,clicked", *lines]) + b"\n")
        else:
            path.write_bytes(sinks.tfrecord_frames(lines))
        expected += [(str(path), line) for line in lines]
    config = CONFIG if fmt == "csv" else parse_config({**CONFIG_DATA, "input": {"format": fmt}})
    header = list(HEADER) if fmt == "csv" else None
    with TestPipeline() as p:
        lines = (
            p
            | ReadRaw([str(tmp_path / "*")], config, header, block_size=4)
            | beam.FlatMap(lambda block: [(block[0], line) for line in block[1]])
        )
        assert_that(lines, equal_to(expected))


# Damaged inputs: each fails the read with one line that names the file.

LINES = [f'{{"user_id": "u{i}", "item_id": "i{i % 17}", "clicked": {i % 2}}}' for i in range(2000)]
DATA = ("\n".join(LINES) + "\n").encode()


def _gzip_cut_at_a_flush_point() -> bytes:
    # What a writer killed mid-file leaves: complete deflate blocks up to a flush, no end.
    compressor = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    return compressor.compress(DATA[: len(DATA) * 3 // 5]) + compressor.flush(zlib.Z_FULL_FLUSH)


def _gzip_bit_flipped() -> bytes:
    damaged = bytearray(gzip.compress(DATA))
    damaged[len(damaged) // 2] ^= 0x10
    return bytes(damaged)


DAMAGED_GZIP = {
    "cut at a flush point": _gzip_cut_at_a_flush_point(),
    "cut at 70% of its bytes": gzip.compress(DATA)[: len(gzip.compress(DATA)) * 7 // 10],
    "bit-flipped": _gzip_bit_flipped(),
    "trailer checksum wrong": gzip.compress(DATA)[:-8] + b"\0\0\0\0" + gzip.compress(DATA)[-4:],
    "second member cut": gzip.compress(DATA) + gzip.compress(DATA)[:-3],
}


def _read_lines(path, header=None):
    source = _LineBlockSource(str(path), 100, header)
    return [line for _, block in source_test_utils.read_from_source(source) for line in block]


def _refusal(path, data: bytes) -> str:
    """The one-line error of reading `data` as the file `path`."""
    path.write_bytes(data)
    with pytest.raises(InputError) as error:
        _read_lines(path)
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("damage", list(DAMAGED_GZIP))
def test_a_damaged_gzip_file_fails_naming_it(tmp_path, damage):
    path = tmp_path / "part-7.jsonl.gz"
    message = _refusal(path, DAMAGED_GZIP[damage])
    assert message.startswith(f"{path}: not a complete gzip file: ")


def test_a_damaged_gzip_file_fails_a_real_read(tmp_path):
    good = tmp_path / "a.csv.gz"
    good.write_bytes(gzip.compress(b"user_id,item_id,clicked\nu1,i1,1\n"))
    cut = tmp_path / "b.csv.gz"
    whole = gzip.compress(b"user_id,item_id,clicked\n" + b"u2,i2,0\n" * 5000)
    cut.write_bytes(whole[: len(whole) * 7 // 10])
    with pytest.raises(InputError, match=r"b\.csv\.gz: not a complete gzip file"):
        with TestPipeline() as p:
            _ = p | ReadRaw([str(tmp_path / "*.csv.gz")], CONFIG, list(HEADER), block_size=10)


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize(
    "compress, suffix",
    [(bz2.compress, ".bz2"), (lzma.compress, ".xz"), (zlib.compress, ".deflate"), (_zstd, ".zst")],
    ids=["bz2", "xz", "deflate", "zstd"],
)
def test_other_compressions_are_checked_too(tmp_path, compress, suffix):
    # Every compression Beam reads by the file's name: a cut file fails, named, instead of
    # being read as a shorter one.
    whole = compress(DATA)
    path = tmp_path / f"part.jsonl{suffix}"
    path.write_bytes(whole)
    assert _read_lines(path) == [line.encode() for line in LINES]
    path.write_bytes(whole[: len(whole) * 7 // 10])
    with pytest.raises(InputError, match=rf"part\.jsonl\{suffix}: not a complete"):
        _read_lines(path)


@pytest.mark.parametrize(
    "compress, suffix", [(zlib.compress, ".deflate"), (_zstd, ".zst")], ids=["deflate", "zstd"]
)
def test_a_damaged_deflate_or_zstd_file_fails_naming_it(tmp_path, compress, suffix):
    damaged = bytearray(compress(DATA))
    damaged[len(damaged) // 2] ^= 0xFF
    path = tmp_path / f"part.jsonl{suffix}"
    assert _refusal(path, bytes(damaged)).startswith(f"{path}: not a complete ")


def test_xz_stream_padding_is_read_as_xz_allows(tmp_path):
    path = tmp_path / "padded.jsonl.xz"
    padded = lzma.compress(DATA[:1000]) + b"\0" * 4 + lzma.compress(DATA[1000:]) + b"\0" * 8
    path.write_bytes(padded)
    assert _read_lines(path) == [line.encode() for line in LINES]


def test_concatenated_gzip_members_and_zero_padding_are_read_whole(tmp_path):
    # `cat a.gz b.gz` is a valid gzip file, and gzip tolerates zero bytes after the end.
    path = tmp_path / "joined.jsonl.gz"
    path.write_bytes(gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:]) + b"\0" * 64)
    assert _read_lines(path) == [line.encode() for line in LINES]


def _tfrecord(records):
    return sinks.tfrecord_frames(records)


@pytest.mark.parametrize(
    "damage, says",
    [
        (lambda data: data[:-5], "is cut short"),
        (lambda data: data[:30], "is cut short"),
        (lambda data: data[:20] + bytes([data[20] ^ 1]) + data[21:], "fails its data checksum"),
        (lambda data: bytes([data[0] ^ 4]) + data[1:], "fails its checksum"),
    ],
    ids=["truncated", "cut in a header", "bit-flipped data", "bit-flipped length"],
)
def test_a_damaged_tfrecord_file_fails_naming_it(tmp_path, damage, says):
    records = [f"record {i}".encode() * 3 for i in range(10)]
    path = tmp_path / "part.tfrecord"
    path.write_bytes(_tfrecord(records))
    source = sources._TFRecordBlockSource(str(path), block_records=4)
    read = [r for _, block in source_test_utils.read_from_source(source) for r in block]
    assert read == records
    path.write_bytes(damage(_tfrecord(records)))
    with pytest.raises(InputError) as error:
        list(source_test_utils.read_from_source(source))
    message = str(error.value)
    assert message.startswith(f"{path}: not a valid TFRecord file: the record at byte ")
    assert says in message and "\n" not in message


def test_a_gzip_tfrecord_cut_short_fails_naming_it(tmp_path):
    path = tmp_path / "part.tfrecord.gz"
    whole = gzip.compress(_tfrecord([b"x" * 100] * 200))
    path.write_bytes(whole[: len(whole) // 2])
    source = sources._TFRecordBlockSource(str(path), block_records=4)
    with pytest.raises(InputError, match=r"part\.tfrecord\.gz: not a complete gzip file"):
        list(source_test_utils.read_from_source(source))


def _parquet(path, rows=50):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {"user_id": [f"u{i}" for i in range(rows)], "clicked": [i % 2 for i in range(rows)]}
    )
    pq.write_table(table, str(path), row_group_size=20)
    return table.to_pylist()


@pytest.mark.parametrize("damage", ["truncated", "footer damaged", "not parquet"])
def test_a_damaged_parquet_file_fails_naming_it(tmp_path, damage):
    path = tmp_path / "part.parquet"
    rows = _parquet(path)
    source = sources._ParquetBlockSource(str(path), block_rows=15, columns=["user_id", "clicked"])
    read = [r for _, block in source_test_utils.read_from_source(source) for r in block]
    assert read == rows
    data = path.read_bytes()
    path.write_bytes(
        {
            "truncated": data[: len(data) * 7 // 10],
            "footer damaged": data[:-40] + b"\xff" * 32 + data[-8:],
            "not parquet": b"user_id,clicked\nu1,1\n",
        }[damage]
    )
    with pytest.raises(InputError) as error:
        list(source_test_utils.read_from_source(source))
    message = str(error.value)
    assert message.startswith(f"{path}: not a readable Parquet file (")
    assert "\n" not in message


def test_parquet_row_groups_split_into_ranges_are_read_once_and_only_the_used_columns(tmp_path):
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    # An unused column may hold anything; a used one with a value Python cannot represent
    # rejects that row only (the decoder refuses the `Unreadable` in its place).
    rows = 95
    far = pa.array([253402300800 + i for i in range(rows)], pa.timestamp("s"))  # year 10000
    when = pa.array([0] * 90 + [253402300800] + [0] * 4, pa.timestamp("s"))  # row 90: year 10000
    table = pa.table(
        {
            "user_id": [f"u{i}" for i in range(rows)],
            "clicked": [i % 2 for i in range(rows)],
            "unused": far,
            "when": when,
        }
    )
    path = tmp_path / "part.parquet"
    pq.write_table(table, str(path), row_group_size=10)
    source = sources._ParquetBlockSource(str(path), block_rows=4, columns=["user_id", "when"])
    read = [row for _, block in source_test_utils.read_from_source(source) for row in block]
    assert [row["user_id"] for row in read] == [f"u{i}" for i in range(rows)]
    assert all(set(row) == {"user_id", "when"} for row in read)
    assert repr(read[90]["when"]).startswith("<unreadable value: ")
    assert read[89]["when"] == datetime.datetime(1970, 1, 1)
    splits = [(s.source, s.start_position, s.stop_position) for s in source.split(300)]
    assert len(splits) > 2
    source_test_utils.assert_sources_equal_reference_source((source, None, None), splits)


def test_an_unreadable_parquet_value_is_a_rejected_row_not_a_failed_run():
    import pyarrow as pa

    from pipeline import features
    from pipeline.batches import BlockDecoder

    config = parse_config(
        {
            "input": {"format": "parquet"},
            "split": {"key": "user_id"},
            "label": {"name": "clicked"},
            "feature": [{"name": "item_id", "type": "categorical"}],
        }
    )
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(["u1", "u2", "u3"]),
            pa.array([0, 253402300800, 0], pa.timestamp("s")),  # the second: the year 10000
            pa.array([1, 0, 1]),
        ],
        ["user_id", "item_id", "clicked"],
    )
    schema = features.tensor_adapter_config(config).arrow_schema
    block = BlockDecoder(config, None, schema).decode(sources._rows(batch))
    not_an_id = "is not a string or an integer id"
    assert block.rejected == [
        (0, f"item_id: datetime.datetime(1970, 1, 1, 0, 0) {not_an_id}"),
        (1, f"item_id: <unreadable value: date value out of range> {not_an_id}"),
        (2, f"item_id: datetime.datetime(1970, 1, 1, 0, 0) {not_an_id}"),
    ]
