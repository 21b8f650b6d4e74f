"""The vectorized CSV path decodes exactly as the row-by-row path."""

import pyarrow as pa
import pytest

from common.config import parse_config
from pipeline import decode, features
from pipeline.batches import BlockDecoder, _NotVectorizable
from pipeline.lines import LineBlock

pytestmark = pytest.mark.pipeline_env

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
    b"u14,i7,i1,mobile,3.5e38,1,x",  # beyond float32: would be stored as +inf
    b"u15,i7,i1,mobile,1_000,1,x",  # Python's float() reads it; not a number here
    b"u16,i7,i1,mobile,\xd9\xa3,1,x",  # an Arabic-Indic digit three
    b"u17,i7,i1,mobile,9.5,1,\xff",  # not UTF-8, in a column the config does not use
    b'u18,"i7 cut,i1,mobile,9.5,1,x',  # a quoted cell cut by a line break...
    b'here",i1,mobile,9.5,1,x',  # ...and its second part
]

CARRIAGE_RETURNS = [
    b"u19,i7,i1\rx,mobile,9.5,1,x",  # a "\r" inside a line
    b"u20,i7,i1,mobile,9.5,1,x\r\r",  # two at the end: both removed
    b"u21,i7,i1,mobile,9.5,1,x\r",
    b"\r",  # a blank line, with its "\r"
]


def _rows(batches):
    table = pa.Table.from_batches(batches, schema=SCHEMA)
    return sorted(tuple(map(str, row.values())) for row in table.to_pylist())


def _row_path_only(text, lines):
    raise _NotVectorizable


def _decode_block(lines, vectorized=True):
    decoder = BlockDecoder(CONFIG, HEADER, SCHEMA)
    if not vectorized:
        decoder._decode_plain_csv = _row_path_only
    return decoder.decode(lines)


def _decode(lines, vectorized=True):
    block = _decode_block(lines, vectorized)
    return _rows(block.train), _rows(block.eval), sorted(block.rejected)


def test_vectorized_and_row_paths_agree_on_good_rows():
    decoder = BlockDecoder(CONFIG, HEADER, SCHEMA)
    vectorized = decoder._decode_plain_csv(
        b"\n".join(line.rstrip(b"\r") for line in GOOD * 40), 200
    )  # raises if the block would fall back to the row path
    assert sum(batch.num_rows for batch in vectorized.values()) == 200
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
        15: "price: '3.5e38' is beyond float32's range",
        16: "price: '1_000' is not a number",
        17: "price: '\u0663' is not a number",
        18: "not UTF-8 text",
        19: "an odd number of quote characters: a quoted cell spans lines, and a CSV row must "
        "fit on one line",
        20: "an odd number of quote characters: a quoted cell spans lines, and a CSV row must "
        "fit on one line",
    }
    assert len(train) + len(eval_) == len(GOOD) + 2


def test_both_paths_split_rows_three_ways_alike():
    config = parse_config(
        {
            "split": {"key": "user_id", "eval_fraction": 0.3, "validation_fraction": 0.3},
            "label": {"name": "clicked"},
            "feature": [
                {"name": "item_id", "type": "categorical"},
                {"name": "history", "type": "bag", "vocabulary": "item_id"},
                {"name": "price", "type": "numeric"},
            ],
        }
    )
    schema = features.tensor_adapter_config(config).arrow_schema
    lines = [f"u{i},i{i % 7},i1 i{i % 3},{i},{i % 2},x".encode() for i in range(300)]
    fast = BlockDecoder(config, HEADER[:3] + ["price", "clicked", "ignored"], schema)
    slow = BlockDecoder(config, HEADER[:3] + ["price", "clicked", "ignored"], schema)
    slow._decode_plain_csv = _row_path_only
    fast_block, slow_block = fast.decode(lines), slow.decode(lines)
    sizes = {}
    for split in ("train", "validation", "eval"):
        got = fast_block.split(split)
        assert _table_rows(got, schema) == _table_rows(slow_block.split(split), schema)
        sizes[split] = sum(b.num_rows for b in got)
    assert sum(sizes.values()) == 300 and min(sizes.values()) > 50
    # A key's rows go where split_of sends the key.
    users = pa.Table.from_batches(fast_block.validation, schema=schema).column("price")
    assert {decode.split_of(f"u{int(p[0])}", 0.3, 0.3) for p in users.to_pylist()} == {"validation"}


def _table_rows(batches, schema):
    table = pa.Table.from_batches(batches, schema=schema)
    return sorted(tuple(map(str, row.values())) for row in table.to_pylist())


def _outcomes(lines, block):
    """(line, split or reason, values) of every line of a decoded block, sorted."""
    outcomes = [(lines[i], "rejected", reason) for i, reason in block.rejected]
    for split, batches in (("train", block.train), ("eval", block.eval)):
        outcomes += [(None, split, row) for row in _rows(batches)]
    return outcomes


@pytest.mark.parametrize("seed", range(20))
def test_a_rows_fate_does_not_depend_on_its_neighbours(seed):
    # Random mixes of good and bad rows, cut into random blocks: every row ends as it does
    # when it is decoded alone on the row path.
    import random

    rng = random.Random(seed)
    lines = [rng.choice(GOOD + BAD + CARRIAGE_RETURNS) for _ in range(rng.randint(1, 120))]
    alone = []
    for line in lines:
        alone += _outcomes([line], _decode_block([line], vectorized=False))
    mixed, start = [], 0
    while start < len(lines):
        size = rng.choice([1, 2, 7, 64, 500])
        block = lines[start : start + size]
        mixed += _outcomes(block, _decode_block(block, vectorized=True))
        start += size
    key = lambda o: (str(o[0]), o[1], str(o[2]))  # noqa: E731
    assert sorted(mixed, key=key) == sorted(alone, key=key)


@pytest.mark.parametrize("seed", range(10))
def test_a_block_read_as_text_decodes_as_its_lines(seed):
    # The reader hands the decoder a block as the text it read (LineBlock); "\r\n" endings
    # go to pyarrow as they are. Every row must end as it does from the list of lines.
    import random

    rng = random.Random(seed)
    lines = [rng.choice(GOOD + BAD + CARRIAGE_RETURNS) for _ in range(rng.randint(1, 200))]
    as_text = _decode_block(LineBlock(b"\n".join(lines), len(lines)))
    assert _outcomes(lines, as_text) == _outcomes(lines, _decode_block(lines))
    # Lines that all end "\r\n" are decoded in one go, as the same lines ending "\n" are.
    crlf = [line.rstrip(b"\r") + b"\r" for line in GOOD * 30]
    decoder = BlockDecoder(CONFIG, HEADER, SCHEMA)
    row_by_row = []
    decoder._decode_rows = lambda records, indices, block: row_by_row.extend(indices)
    as_text = decoder.decode(LineBlock(b"\n".join(crlf), len(crlf)))
    assert not row_by_row
    assert _outcomes(crlf, as_text) == _outcomes(crlf, _decode_block(crlf, vectorized=False))


def test_sequences_keep_their_tokens_and_drop_empty_ones():
    decoder = BlockDecoder(CONFIG, HEADER, SCHEMA)
    block = decoder.decode(GOOD)
    table = pa.Table.from_batches(block.train + block.eval)
    histories = sorted(map(tuple, table.column("history").to_pylist()))
    assert histories == sorted(
        [(b"i1", b"i2", b"i1"), (), (b"i9",), (b"i1", b"i1", b"i1"), (b"i3",)]
    )


def test_the_block_path_rejects_json_rows_by_the_row_rule():
    import dataclasses

    from common.config import InputConfig

    config = dataclasses.replace(CONFIG, input=InputConfig(format="jsonl"))
    good = (
        b'{"user_id": "u1", "item_id": "i1", "history": [], "device": "d", "price": 1, '
        b'"clicked": 0}'
    )
    lines = [
        good,
        good.replace(b'"clicked": 0', b'"clicked": 0, "clicked": 1'),
        good.replace(b'"i1"', b'"i1\\ud800"'),
    ]
    block = BlockDecoder(config, None, SCHEMA).decode(lines)
    assert sum(b.num_rows for split in decode.SPLITS for b in block.split(split)) == 1
    assert sorted(block.rejected) == [
        (1, "the JSON object repeats the key 'clicked'"),
        (
            2,
            "item_id: the value is not valid Unicode text (a lone surrogate, such as an "
            "escaped \\ud800 without its pair)",
        ),
    ]
