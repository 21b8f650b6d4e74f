"""The vectorized CSV path decodes exactly as the row-by-row path, and the block reader
reads every line once however its ranges are split."""

import gzip

import pyarrow as pa
import pytest
from apache_beam.io import source_test_utils

from common.config import parse_config
from pipeline import features
from pipeline.batches import BlockDecoder, _NotVectorizable
from pipeline.sources import CsvHeader, _LineBlockSource

CONFIG = parse_config(
    {
        "split": {"key": "user_id", "eval_fraction": 0.3},
        "label": {"name": "clicked"},
        "feature": [
            {"name": "item_id", "type": "categorical", "vocabulary": "items"},
            {"name": "history", "type": "sequence", "vocabulary": "items"},
            {"name": "device", "type": "categorical"},
            {"name": "price", "type": "numeric"},
        ],
    }
)
HEADER = ["user_id", "item_id", "history", "device", "price", "clicked", "ignored"]
SCHEMA = features.tensor_adapter_config(CONFIG).arrow_schema

GOOD = [
    b"u1,i7,i1 i2  i1,mobile,9.5,1,x",
    b"u2,i8,,desktop,-0.25,0,",
    b"u3,i\xc3\xa9,i9,tablet,1e3,1,y",  # UTF-8 id
    b"u4,i1,i1 i1 i1 ,mobile,3,0,z\r",  # CRLF line ending
    b"u5,i2,i3,mobile,0.1,1,",
]
BAD = [
    b"u6,i7,i1,mobile,cheap,1,x",  # not a number
    b"u7,i7,i1,mobile,nan,1,x",  # not finite
    b"u8,,i1,mobile,9.5,1,x",  # missing categorical
    b"u9,i7,i1,mobile,9.5,2,x",  # label not 0 or 1
    b",i7,i1,mobile,9.5,1,x",  # missing split key
    b"u10,i7,i1,mobile,9.5,1",  # a field short
    b"",  # blank
    b'u11,"i7, quoted",i1,mobile,9.5,1,x',  # quoted: decoded row by row, and valid
    b"u12,i\xff,i1,mobile,9.5,1,x",  # not UTF-8
    b"u13,i7,i1,mobile, 9.5 ,1,x",  # spaces around a number: valid, row by row
]


def _rows(batches):
    table = pa.Table.from_batches(batches, schema=SCHEMA)
    return sorted(tuple(map(str, row.values())) for row in table.to_pylist())


def _row_path_only(text, lines):
    raise _NotVectorizable


def _decode(lines, vectorized=True):
    decoder = BlockDecoder(CONFIG, HEADER, SCHEMA)
    if not vectorized:
        decoder._decode_plain_csv = _row_path_only
    block = decoder.decode(lines)
    return _rows(block.train), _rows(block.eval), sorted(block.rejected)


def test_vectorized_and_row_paths_agree_on_good_rows():
    decoder = BlockDecoder(CONFIG, HEADER, SCHEMA)
    vectorized = decoder._decode_plain_csv(
        b"\n".join(line.rstrip(b"\r") for line in GOOD * 40), 200
    )  # raises if the block would fall back to the row path
    assert sum(batch.num_rows for batch in vectorized) == 200
    fast = _decode(GOOD * 40)
    slow = _decode(GOOD * 40, vectorized=False)
    assert fast == slow
    train, eval_, rejected = fast
    assert len(train) + len(eval_) == 200 and train and eval_ and not rejected


@pytest.mark.parametrize("bad", range(len(BAD)))
def test_one_bad_row_in_a_block_gets_its_row_path_reason(bad):
    lines = GOOD * 10 + [BAD[bad]] + GOOD
    fast = _decode(lines)
    assert fast == _decode(lines, vectorized=False)
    train, eval_, rejected = fast
    assert len(train) + len(eval_) + len(rejected) == len(lines)


def test_every_bad_row_at_once():
    lines = GOOD + BAD
    train, eval_, rejected = _decode(lines)
    reasons = dict(rejected)
    assert reasons == {
        5: "price: 'cheap' is not a number",
        6: "price: 'nan' is not a finite number",
        7: "missing value for item_id",
        8: "label clicked: '2' is not 0 or 1",
        9: "missing value for split key user_id",
        10: "expected 7 fields, got 6",
        11: "blank line",
        13: "not UTF-8 text",
    }
    assert len(train) + len(eval_) == len(GOOD) + 2


def test_sequences_keep_their_tokens_and_drop_empty_ones():
    decoder = BlockDecoder(CONFIG, HEADER, SCHEMA)
    block = decoder.decode(GOOD)
    table = pa.Table.from_batches(block.train + block.eval)
    histories = sorted(map(tuple, table.column("history").to_pylist()))
    assert histories == sorted(
        [(b"i1", b"i2", b"i1"), (), (b"i9",), (b"i1", b"i1", b"i1"), (b"i3",)]
    )


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
    source = _LineBlockSource(
        path, block_lines=64, header=CsvHeader(("user_id", "item_id"), ",", path)
    )
    read = [line for _, block in source_test_utils.read_from_source(source) for line in block]
    assert read == lines
    blocks = [block for _, block in source_test_utils.read_from_source(source)]
    assert [len(b) for b in blocks] == [64, 64, 64, 64, 44]


def test_block_source_splits_and_dynamic_splits_lose_and_repeat_nothing(tmp_path):
    lines = [b"header"] + [f"line {i} {'y' * (i % 5)}".encode() for i in range(40)]
    path = tmp_path / "lines.txt"
    path.write_bytes(b"\n".join(lines) + b"\n")
    source = _LineBlockSource(
        str(path), block_lines=1, header=CsvHeader(("header",), ",", str(path))
    )
    splits = [(s.source, s.start_position, s.stop_position) for s in source.split(37)]
    assert len(splits) > 5
    source_test_utils.assert_sources_equal_reference_source((source, None, None), splits)
    source_test_utils.assert_split_at_fraction_exhaustive(source)


def test_tfrecord_frames_match_beams_framing():
    import io

    from apache_beam.io.tfrecordio import _TFRecordUtil

    from pipeline.sinks import tfrecord_frames

    records = [b"", b"x", b"a longer record \x00\xff" * 50]
    expected = io.BytesIO()
    for record in records:
        _TFRecordUtil.write_record(expected, record)
    assert tfrecord_frames(records) == expected.getvalue()
