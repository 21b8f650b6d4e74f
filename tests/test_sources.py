"""The reader: every line of every matched file is read exactly once, however the files are
matched and their byte ranges split, and a CSV file with another header stops the run."""

import gzip

import apache_beam as beam
import pytest
from apache_beam.io import source_test_utils
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from common.config import parse_config
from pipeline import sources
from pipeline.input_checks import InputError
from pipeline.sources import CsvHeader, ReadRaw, _LineBlockSource

CONFIG = parse_config(
    {
        "split": {"key": "user_id"},
        "label": {"name": "clicked"},
        "feature": [{"name": "item_id", "type": "categorical"}],
    }
)
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
