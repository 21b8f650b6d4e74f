import pytest

from common.config import ConfigError, config_from_dict, load_config, parse_config
from tests.conftest import EXAMPLE_CONFIG

MINIMAL = {
    "split": {"key": "user_id"},
    "label": {"name": "clicked", "type": "binary"},
    "feature": [
        {"name": "item_id", "type": "categorical", "vocabulary": "items"},
        {"name": "history", "type": "sequence", "vocabulary": "items"},
        {"name": "price", "type": "numeric"},
    ],
}


def with_changes(**sections):
    data = {k: (list(v) if isinstance(v, list) else dict(v)) for k, v in MINIMAL.items()}
    data.update(sections)
    return data


def test_example_config_loads_with_shared_vocabulary():
    config = load_config(EXAMPLE_CONFIG)
    vocabularies = config.vocabularies()
    assert vocabularies["items"] == ["history", "item_id"]
    assert vocabularies["device"] == ["device"]
    assert config.vocabulary_config("region").frequency_threshold == 3
    assert config.vocabulary_config("region").top_k == 100000  # inherits the defaults
    assert config.vocabulary_config("items").frequency_threshold == 1
    assert "user_id" in config.columns()  # the split key is read though it is not a feature
    assert config.feature("history").truncate == "keep_last"


def test_defaults_and_round_trip_through_json():
    config = parse_config(with_changes())
    assert config.input.format == "csv"
    assert config.sequence.length_coverage == 0.95
    assert config.embedding.dimension == "auto"
    assert config_from_dict(config.to_dict()) == config


def test_integer_accepted_where_float_expected():
    config = parse_config(with_changes(sequence={"length_coverage": 1}))
    assert config.sequence.length_coverage == 1.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (with_changes(bogus={}), "unknown section [bogus]"),
        (with_changes(split={"key": "user_id", "fraction": 0.1}), "unknown key split.fraction"),
        (with_changes(label={"name": "clicked", "type": "ordinal"}), "label.type = 'ordinal'"),
        (
            with_changes(feature=[{"name": "x", "type": "embedding"}]),
            "feature[0] ('x').type = 'embedding'",
        ),
        (
            with_changes(feature=[{"name": "x", "type": "categorical", "dim": 4}]),
            "unknown key feature[0] ('x').dim",
        ),
        (
            with_changes(feature=[{"name": "clicked", "type": "numeric"}]),
            "'clicked' is the label and cannot also be a feature",
        ),
        (
            with_changes(feature=[{"name": "p", "type": "numeric", "vocabulary": "v"}]),
            "numeric feature 'p' cannot have a vocabulary",
        ),
        (
            with_changes(
                feature=[
                    {"name": "p", "type": "numeric"},
                    {"name": "c", "type": "categorical", "vocabulary": "p"},
                ]
            ),
            "vocabulary 'p' is also the name of a numeric feature",
        ),
        (with_changes(feature=[]), "no [[feature]] entries"),
        (
            with_changes(feature=[{"name": "a", "type": "categorical"}] * 2),
            "feature 'a' is described twice",
        ),
        (with_changes(split={"key": "u", "eval_fraction": 1.5}), "split.eval_fraction"),
        (with_changes(split={}), "split.key must name the column"),
        (with_changes(vocabulary={"top_k": 0}), "vocabulary.top_k must be >= 1"),
        (with_changes(vocabulary={"top_k": "many"}), "vocabulary.top_k must be an integer"),
        (
            with_changes(vocabulary={"nope": {"top_k": 5}}),
            "[vocabulary.nope] names no vocabulary",
        ),
        (with_changes(embedding={"dimension": 0}), "embedding.dimension must be a positive"),
        (with_changes(embedding={"dimension": "big"}), "embedding.dimension must be a positive"),
        (with_changes(embedding={"combiner": "max"}), "embedding.combiner = 'max'"),
        (with_changes(sequence={"length_coverage": 0}), "sequence.length_coverage"),
        (with_changes(input={"format": "xml"}), "input.format = 'xml'"),
        (
            with_changes(feature=[{"name": "c", "type": "categorical", "max_sequence_length": 5}]),
            "max_sequence_length is only for sequence features",
        ),
        ({"feature": MINIMAL["feature"]}, "missing [label] section"),
        (
            with_changes(vocabulary={"items": {"shrinkable": "yes"}}),
            "vocabulary.items.shrinkable must be true or false, got 'yes'",
        ),
        (
            with_changes(vocabulary={"shrinkable": 1}),
            "vocabulary.shrinkable must be true or false, got 1",
        ),
    ],
)
def test_invalid_configs_name_the_key(data, message):
    with pytest.raises(ConfigError) as error:
        parse_config(data, source="my.toml")
    assert message in str(error.value)
    assert str(error.value).startswith("my.toml: ")


def test_load_config_names_the_file(write_config, tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.toml")
    broken = write_config("[label\nname = 1\n")
    with pytest.raises(ConfigError, match=f"{broken}: not valid TOML"):
        load_config(broken)


def test_dimension_accepts_int_per_vocabulary(write_config):
    path = write_config(
        """
        [split]
        key = "u"
        [label]
        name = "y"
        [[feature]]
        name = "c"
        type = "categorical"
        [vocabulary.c]
        dimension = 12
        [embedding]
        dimension = 32
        """
    )
    config = load_config(path)
    assert config.vocabulary_config("c").dimension == 12
    assert config.embedding.dimension == 32


def _embedding(**keys):
    return with_changes(embedding=keys)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # Each was accepted silently, or crashed with a TypeError, before fields were checked
        # by their declared type.
        (with_changes(split={"key": "user_id", "eval_fraction": "0.1"}), "split.eval_fraction"),
        (with_changes(split={"key": "user_id", "eval_fraction": False}), "split.eval_fraction"),
        (_embedding(learning_rate=True), "embedding.learning_rate must be a number, got True"),
        (_embedding(learning_rate=float("nan")), "embedding.learning_rate must be a finite"),
        (_embedding(learning_rate=float("inf")), "embedding.learning_rate must be a finite"),
        (with_changes(sequence={"length_coverage": True}), "sequence.length_coverage"),
        (_embedding(clip_weight_min="abc"), "embedding.clip_weight_min must be a number"),
        (
            _embedding(clip_weight_min=1.0, clip_weight_max=-1.0),
            "clip_weight_min = 1.0 is above clip_weight_max = -1.0",
        ),
        (
            with_changes(feature=[{"name": "x", "type": "categorical", "vocabulary": ""}]),
            "feature[0] ('x').vocabulary must name a vocabulary",
        ),
        (with_changes(input={"field_delimiter": '"'}), "input.field_delimiter must be one"),
        (with_changes(input={"field_delimiter": "\n"}), "input.field_delimiter must be one"),
        (
            with_changes(input={"list_delimiter": "\n"}),
            "input.list_delimiter must not hold a line break, got '\\n'",
        ),
        (with_changes(input={"list_delimiter": "|\r"}), "input.list_delimiter must not hold"),
        (with_changes(vocabulary={"top_k": 1.5}), "vocabulary.top_k must be an integer"),
        (with_changes(vocabulary={"top_k": True}), "vocabulary.top_k must be an integer"),
        (
            with_changes(split={"key": "clicked"}),
            "split.key = 'clicked' is the label",
        ),
        (
            with_changes(split={"key": "history"}),
            "split.key = 'history' is a sequence feature: a row is split by one value",
        ),
    ],
)
def test_every_field_is_checked_by_its_declared_type(data, message):
    with pytest.raises(ConfigError) as raised:
        parse_config(data, source="f.toml")
    assert str(raised.value).startswith("f.toml: ")
    assert message in str(raised.value)


def test_valid_clip_range_and_integer_learning_rate_are_accepted():
    config = parse_config(_embedding(clip_weight_min=-1, clip_weight_max=1, learning_rate=1))
    assert (config.embedding.clip_weight_min, config.embedding.clip_weight_max) == (-1.0, 1.0)
    assert config.embedding.learning_rate == 1.0
    assert isinstance(config.embedding.learning_rate, float)


def test_shrinkable_marks_one_vocabulary_and_survives_config_json(write_config):
    path = write_config(
        """
        [split]
        key = "u"
        [label]
        name = "y"
        [[feature]]
        name = "item"
        type = "categorical"
        [[feature]]
        name = "region"
        type = "categorical"
        [vocabulary.item]
        shrinkable = true
        """
    )
    config = load_config(path)
    assert config.vocabulary_config("item").shrinkable is True
    assert config.vocabulary_config("region").shrinkable is False  # the default
    assert config_from_dict(config.to_dict()).vocabulary_config("item").shrinkable is True


def test_validation_fraction_is_validated_with_the_eval_fraction():
    config = parse_config(with_changes(split={"key": "user_id", "validation_fraction": 0.2}))
    assert (config.split.eval_fraction, config.split.validation_fraction) == (0.1, 0.2)
    assert parse_config(with_changes()).split.validation_fraction == 0.0
    assert config_from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="split.validation_fraction must be in"):
        parse_config(with_changes(split={"key": "user_id", "validation_fraction": -0.1}))
    with pytest.raises(ConfigError, match="must be a number"):
        parse_config(with_changes(split={"key": "user_id", "validation_fraction": "0.1"}))
    with pytest.raises(ConfigError, match="eval_fraction \\+ split.validation_fraction = 1 "):
        parse_config(
            with_changes(split={"key": "user_id", "eval_fraction": 0.5, "validation_fraction": 0.5})
        )


def test_a_config_json_from_before_the_new_keys_still_loads():
    data = parse_config(with_changes()).to_dict()
    del data["split"]["validation_fraction"]
    for feature in data["features"]:
        del feature["keep"]
    config = config_from_dict(data)
    assert config.split.validation_fraction == 0.0
    assert not any(f.keep for f in config.features)


def test_bag_and_keep():
    features = MINIMAL["feature"] + [
        {"name": "genres", "type": "bag"},
        {"name": "user_id", "type": "categorical", "keep": True},
    ]
    config = parse_config(with_changes(feature=features))
    assert config.feature("genres").type == "bag"
    assert config.vocabularies()["genres"] == ["genres"]
    assert config.feature("user_id").keep and not config.feature("genres").keep
    with pytest.raises(ConfigError, match="max_sequence_length is only for sequence features"):
        parse_config(
            with_changes(feature=[{"name": "genres", "type": "bag", "max_sequence_length": 3}])
        )
    with pytest.raises(ConfigError, match="'price'\\).keep is for features with a vocabulary"):
        parse_config(with_changes(feature=[{"name": "price", "type": "numeric", "keep": True}]))
    with pytest.raises(ConfigError, match="keep must be true or false"):
        parse_config(with_changes(feature=[{"name": "g", "type": "bag", "keep": "yes"}]))


def test_truncate_is_only_for_sequences():
    data = with_changes(
        feature=[{"name": "item_id", "type": "categorical", "truncate": "keep_first"}]
    )
    with pytest.raises(ConfigError, match=r"feature\[0\] \('item_id'\).truncate is only for"):
        parse_config(data, source="f.toml")


@pytest.mark.parametrize(
    "first, second",
    [("a/b", "a_b"), ("a.b", "a_b"), ("a b", "a-b"), ("a b", "a--b"), ("x ", "x")],
)
def test_vocabularies_that_tf_transform_writes_to_one_file_are_refused(first, second):
    # tf.Transform sanitizes vocab_filename; two names that map to one asset file overwrote
    # each other, and every id of one column became the OOV id, with exit code 0.
    features = [
        {"name": "item_id", "type": "categorical", "vocabulary": first},
        {"name": "history", "type": "sequence", "vocabulary": second},
    ]
    with pytest.raises(ConfigError, match=rf"vocabularies {first!r} and {second!r}.*assets/"):
        parse_config(with_changes(feature=features))
    # Feature names are vocabulary names when no vocabulary is given: the same rule.
    features = [{"name": first, "type": "categorical"}, {"name": second, "type": "categorical"}]
    with pytest.raises(ConfigError, match="would both be written as"):
        parse_config(with_changes(feature=features))


def test_the_vocabulary_file_rule_is_tf_transforms():
    from tensorflow_transform.analyzers import sanitized_vocab_filename

    from common.config import vocabulary_file_name

    for name in ["items", "a/b", "a.b", " a  b ", "a--b", "é ü", "x\ty", "a-_-b", "α/β", "k:v"]:
        assert vocabulary_file_name(name) == sanitized_vocab_filename(name), name


@pytest.mark.parametrize("delimiter", ["；", "é", "ab", "\t\t"])
def test_a_field_delimiter_must_be_one_ascii_character(delimiter):
    # A non-ASCII delimiter passed the check and died inside Beam's CSV reading.
    with pytest.raises(ConfigError, match="field_delimiter must be one ASCII character"):
        parse_config(with_changes(input={"field_delimiter": delimiter}))
    assert parse_config(with_changes(input={"field_delimiter": "\t"})).input.field_delimiter


@pytest.mark.parametrize(
    "feature",
    [
        {"name": "item_id__bias", "type": "categorical"},
        {"name": "price__bias", "type": "numeric"},
        {"name": "tags", "type": "bag", "vocabulary": "items__bias"},
    ],
)
def test_names_the_model_uses_for_its_bias_keys_are_refused(feature):
    # A feature named item_id__bias trained until the model's bias key collided with it.
    features = [*MINIMAL["feature"], feature]
    with pytest.raises(ConfigError, match="ends with '__bias'"):
        parse_config(with_changes(feature=features))
