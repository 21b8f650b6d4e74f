import pyarrow as pa
import pytest

from pipeline.config import parse_config
from pipeline.decode import (
    EVAL,
    TRAIN,
    CsvRowDecoder,
    RowError,
    check_header,
    split_of,
    to_record_batch,
)

CONFIG = parse_config(
    {
        "split": {"key": "user_id", "eval_fraction": 0.5},
        "label": {"name": "clicked"},
        "feature": [
            {"name": "item_id", "type": "categorical", "vocabulary": "items"},
            {"name": "history", "type": "sequence", "vocabulary": "items"},
            {"name": "price", "type": "numeric"},
        ],
    }
)
HEADER = ["user_id", "item_id", "history", "price", "clicked", "ignored"]


@pytest.fixture
def decoder():
    return CsvRowDecoder(CONFIG, HEADER)


def test_decodes_a_row(decoder):
    split, values = decoder.decode('u1,i7,"i1 i2  i1",9.5,1,whatever')
    assert split in (TRAIN, EVAL)
    assert values == {
        "item_id": [b"i7"],
        "history": [b"i1", b"i2", b"i1"],  # double spaces make no empty token
        "price": [9.5],
        "clicked": [1.0],
    }


def test_empty_sequence_is_a_valid_empty_list(decoder):
    _, values = decoder.decode("u1,i7,,9.5,0,")
    assert values["history"] == []


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("u1,i7,i1,9.5,1", "expected 6 fields, got 5"),
        ("u1,i7,i1,9.5,1,x,y", "expected 6 fields, got 7"),
        ("u1,i7,i1,cheap,1,x", "price: 'cheap' is not a number"),
        ("u1,i7,i1,nan,1,x", "price: 'nan' is not a finite number"),
        ("u1,i7,i1,,1,x", "missing value for price"),
        ("u1,,i1,9.5,1,x", "missing value for item_id"),
        ("u1,i7,i1,9.5,yes,x", "label clicked: 'yes' is not a number"),
        ("u1,i7,i1,9.5,2,x", "label clicked: '2' is not 0 or 1"),
        (",i7,i1,9.5,1,x", "missing value for split key user_id"),
        ("   ", "blank line"),
    ],
)
def test_bad_rows_raise_with_their_reason(decoder, line, reason):
    with pytest.raises(RowError) as error:
        decoder.decode(line)
    assert str(error.value) == reason


def test_split_is_stable_and_near_the_fraction():
    keys = [f"user{i}" for i in range(4000)]
    splits = [split_of(k, 0.25) for k in keys]
    assert splits == [split_of(k, 0.25) for k in keys]
    share = splits.count(EVAL) / len(keys)
    assert 0.22 < share < 0.28
    assert all(split_of(k, 0.0) == TRAIN for k in keys[:100])


def test_rows_of_one_key_never_straddle(decoder):
    splits = {decoder.decode(f"same-user,i{i},i1,1,0,")[0] for i in range(50)}
    assert len(splits) == 1


def test_check_header_names_missing_columns():
    with pytest.raises(ValueError, match=r"a\.csv: the header has no column 'price'"):
        check_header(["user_id", "item_id", "history", "clicked"], CONFIG, "a.csv")
    with pytest.raises(ValueError, match="repeats column 'item_id'"):
        check_header(HEADER + ["item_id"], CONFIG, "a.csv")


def test_to_record_batch_follows_the_schema_order(decoder):
    schema = pa.schema(
        [
            ("clicked", pa.large_list(pa.float32())),
            ("history", pa.large_list(pa.large_binary())),
            ("item_id", pa.large_list(pa.large_binary())),
            ("price", pa.large_list(pa.float32())),
        ]
    )
    rows = [decoder.decode("u1,a,x y,1.5,1,")[1], decoder.decode("u2,b,,2,0,")[1]]
    batch = to_record_batch(rows, schema)
    assert batch.schema == schema
    assert batch.column(1).to_pylist() == [[b"x", b"y"], []]
    assert batch.column(0).to_pylist() == [[1.0], [0.0]]
