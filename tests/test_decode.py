import numpy as np
import pyarrow as pa
import pytest

from common.config import parse_config
from pipeline.decode import (
    EVAL,
    TRAIN,
    VALIDATION,
    CsvRowDecoder,
    RowDecoder,
    RowError,
    check_columns,
    split_hash,
    split_hashes,
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

pytestmark = pytest.mark.pipeline_env
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
        # Finite numbers beyond float32, the stored type, would become +inf.
        ("u1,i7,i1,1e300,1,x", "price: '1e300' is beyond float32's range"),
        ("u1,i7,i1,-3.5e38,1,x", "price: '-3.5e38' is beyond float32's range"),
        ("u1,i7,i1,1_000,1,x", "price: '1_000' is not a number"),
        ("u1,i7,i1,٣,1,x", "price: '٣' is not a number"),
        ("u1,i7,i1,9.5,１,x", "label clicked: '１' is not a number"),
        # The first part of a quoted cell cut by a line break, and its second part.
        ('u1,"i7 is,i1,9.5,1,x', "an odd number of quote characters: a quoted cell spans"),
        ('x",i1,9.5,1,x,y', "an odd number of quote characters: a quoted cell spans"),
    ],
)
def test_bad_rows_raise_with_their_reason(decoder, line, reason):
    with pytest.raises(RowError) as error:
        decoder.decode(line)
    assert str(error.value).startswith(reason)


def test_numbers_at_float32s_edge(decoder):
    assert decoder.decode("u1,i7,i1,3.4028235e38,1,x")[1]["price"] == [3.4028235e38]
    assert decoder.decode("u1,i7,i1, -1.5e-3 ,1,x")[1]["price"] == [-0.0015]


def test_split_is_stable_and_near_the_fraction():
    keys = [f"user{i}" for i in range(4000)]
    splits = [split_of(k, 0.25) for k in keys]
    assert splits == [split_of(k, 0.25) for k in keys]
    share = splits.count(EVAL) / len(keys)
    assert 0.22 < share < 0.28
    assert all(split_of(k, 0.0) == TRAIN for k in keys[:100])


def test_validation_takes_its_keys_from_train_and_leaves_eval_as_it_was():
    keys = [f"user{i}" for i in range(4000)]
    before = [split_of(k, 0.25) for k in keys]
    after = [split_of(k, 0.25, 0.15) for k in keys]
    assert 0.12 < after.count(VALIDATION) / len(keys) < 0.18
    assert [k for k, s in zip(keys, after, strict=True) if s == EVAL] == [
        k for k, s in zip(keys, before, strict=True) if s == EVAL
    ]
    assert all(b == TRAIN for b, a in zip(before, after, strict=True) if a == VALIDATION)
    assert VALIDATION not in {split_of(k, 0.25, 0.0) for k in keys}


def test_bag_cells_are_lists_in_every_format():
    config = parse_config(
        {
            "split": {"key": "user_id"},
            "label": {"name": "clicked"},
            "feature": [{"name": "genres", "type": "bag"}],
        }
    )
    csv_row = CsvRowDecoder(config, ["user_id", "genres", "clicked"]).decode("u1,a b  c,1")
    assert csv_row[1]["genres"] == [b"a", b"b", b"c"]
    rows = RowDecoder(config)
    assert rows.decode_json('{"user_id": "u", "genres": ["a", 7], "clicked": 0}')[1] == {
        "genres": [b"a", b"7"],
        "clicked": [0.0],
    }
    assert rows.decode_mapping({"user_id": "u", "clicked": 0})[1]["genres"] == []
    record = _example(user_id=[b"u"], genres=[b"x", b"y"], clicked=[1])
    assert rows.decode_example(record)[1]["genres"] == [b"x", b"y"]
    with pytest.raises(RowError, match="genres: expected a list of ids"):
        rows.decode_json('{"user_id": "u", "genres": "a", "clicked": 0}')


def test_vectorized_split_hashes_equal_the_row_hash():
    rng = np.random.default_rng(3)
    alphabet = list("abcxyz019-_") + ["é", "東", "京", "🙂"]
    keys = ["", "a", "user1", "x" * 300] + [
        "".join(rng.choice(alphabet, size=rng.integers(1, 40))) for _ in range(500)
    ]
    array = pa.array(["dropped"] + keys)[1:]  # a slice: the array's offset is not 0
    assert split_hashes(array).tolist() == [split_hash(k) for k in keys]
    assert split_hashes(pa.array([], pa.string())).tolist() == []


def test_rows_of_one_key_never_straddle(decoder):
    splits = {decoder.decode(f"same-user,i{i},i1,1,0,")[0] for i in range(50)}
    assert len(splits) == 1


def test_check_columns_names_missing_columns():
    with pytest.raises(ValueError, match=r"a\.csv: the header has no column 'price'"):
        check_columns(["user_id", "item_id", "history", "clicked"], CONFIG, "a.csv")
    with pytest.raises(ValueError, match="repeats column 'item_id'"):
        check_columns(HEADER + ["item_id"], CONFIG, "a.csv")


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


def _values(decoder_method, record):
    return decoder_method(record)[1]


@pytest.fixture
def any_format():
    return RowDecoder(CONFIG)


def test_json_rows(any_format):
    values = _values(
        any_format.decode_json,
        '{"user_id": 7, "item_id": 42, "history": ["i1", 5], "price": 2, "clicked": 0}',
    )
    # integer ids become the same text ids as in CSV
    assert values == {
        "item_id": [b"42"],
        "history": [b"i1", b"5"],
        "price": [2.0],
        "clicked": [0.0],
    }
    missing_sequence = '{"user_id": "u", "item_id": "a", "price": 1, "clicked": 1}'
    assert _values(any_format.decode_json, missing_sequence)["history"] == []


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            '{"user_id": "u", "item_id": ["a", "b"], "history": [], "price": 1, "clicked": 1}',
            "item_id: a list where one value belongs",
        ),
        (
            '{"user_id": "u", "item_id": "a", "history": "a b", "price": 1, "clicked": 1}',
            "history: expected a list of ids, got 'a b'",
        ),
        (
            '{"user_id": "u", "item_id": "a", "history": [["a"]], "price": 1, "clicked": 1}',
            "history: nested lists are not a sequence of ids",
        ),
        (
            '{"user_id": "u", "item_id": "a", "history": [], "price": true, "clicked": 1}',
            "price: True is not a number",
        ),
        (
            '{"user_id": "u", "item_id": "a", "history": [], "clicked": 1}',
            "missing value for price",
        ),
        (
            '{"user_id": "u", "item_id": 1.5, "history": [], "price": 1, "clicked": 1}',
            "item_id: 1.5 is not a string or an integer id",
        ),
        ("[1, 2]", "a JSON line must be an object of column: value"),
        (
            '{"user_id": "u", "item_id": "a", "history": [], "price": 1'
            + "0" * 400
            + ', "clicked": 1}',
            "price: '100000000000... (401 digits)' is beyond float32's range",
        ),
        (
            '{"user_id": "u", "item_id": "a", "history": [], "price": 1'
            + "0" * 5000
            + ', "clicked": 1}',
            "malformed JSON: Exceeds the limit",
        ),
        ("[" * 50_000 + "]" * 50_000, "malformed JSON: nested too deeply"),
        (
            '{"user_id": "u", ',
            "malformed JSON: Expecting property name enclosed in double quotes at column 18",
        ),
    ],
)
def test_bad_json_rows(any_format, line, reason):
    with pytest.raises(RowError) as error:
        any_format.decode_json(line)
    assert str(error.value).startswith(reason)


def test_a_json_line_after_a_byte_order_mark_is_read(any_format):
    line = '\ufeff{"user_id": "u", "item_id": "a", "history": ["b"], "price": 2, "clicked": 1}'
    assert any_format.decode_json(line)[1]["item_id"] == [b"a"]


def _example(**features):
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    for name, values in features.items():
        feature = example.features.feature[name]
        if values and isinstance(values[0], bytes):
            feature.bytes_list.value.extend(values)
        elif values and isinstance(values[0], int):
            feature.int64_list.value.extend(values)
        else:
            feature.float_list.value.extend(values)
    return example.SerializeToString()


def test_example_rows(any_format):
    record = _example(user_id=[b"u"], item_id=[42], history=[b"a", b"b"], price=[1.5], clicked=[1])
    assert _values(any_format.decode_example, record) == {
        "item_id": [b"42"],
        "history": [b"a", b"b"],
        "price": [1.5],
        "clicked": [1.0],
    }
    with pytest.raises(RowError, match="item_id: a list of 2 values where one belongs"):
        any_format.decode_example(
            _example(user_id=[b"u"], item_id=[b"a", b"b"], price=[1.0], clicked=[1])
        )
    with pytest.raises(RowError, match="missing value for price"):
        any_format.decode_example(_example(user_id=[b"u"], item_id=[b"a"], clicked=[1]))
    with pytest.raises(RowError, match="not a tf.Example"):
        any_format.decode_example(b"\xff\xff\xff")


def test_mapping_rows_like_parquet(any_format):
    row = {"user_id": "u", "item_id": "a", "history": None, "price": 3, "clicked": 1}
    assert _values(any_format.decode_mapping, row)["history"] == []


def test_reason_kind_drops_the_values():
    from pipeline.decode import reason_kind

    assert reason_kind("price: 'cheap' is not a number") == "price: '...' is not a number"
    assert reason_kind("expected 7 fields, got 6") == "expected 7 fields, got 6"


def test_a_csv_cell_longer_than_the_csv_modules_default_limit_is_read(decoder):
    history = " ".join(f"i{n}" for n in range(100_000))  # about 590 KB in one cell
    assert len(decoder.decode(f"u1,i7,{history},9.5,1,x")[1]["history"]) == 100_000


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            '{"user_id": "u", "item_id": "a", "history": [], "price": 1, "clicked": 0, '
            '"clicked": 1}',
            "the JSON object repeats the key 'clicked'",
        ),
        (
            '{"user_id": "u", "item_id": "a", "history": ["i1\\ud800"], "price": 1, "clicked": 0}',
            "history: the value is not valid Unicode text (a lone surrogate",
        ),
        (
            '{"user_id": "u", "item_id": "\\udc00", "history": [], "price": 1, "clicked": 0}',
            "item_id: the value is not valid Unicode text",
        ),
        (
            '{"user_id": "u\\ud800", "item_id": "a", "history": [], "price": 1, "clicked": 0}',
            "user_id: the value is not valid Unicode text",
        ),
    ],
)
def test_a_repeated_key_or_a_lone_surrogate_is_a_rejected_row(any_format, line, reason):
    # Last-wins on a repeated key silently took one of two labels; a lone surrogate escape
    # ended the whole run with a UnicodeEncodeError naming no file.
    with pytest.raises(RowError) as error:
        any_format.decode_json(line)
    assert str(error.value).startswith(reason)
    paired = (
        '{"user_id": "u", "item_id": "\\ud83d\\ude00", "history": [], "price": 1, "clicked": 0}'
    )
    assert any_format.decode_json(paired)[1]["item_id"] == ["😀".encode()]
