"""The feature config: what the columns are, how to measure them, how to embed them.

A user describes the columns once, in TOML. `load_config` parses and validates the file
before any pipeline starts and returns a `Config`; every mistake is a `ConfigError` that
names the file and the key. The pipeline writes the resolved config next to its output as
JSON (`Config.to_dict`), so the planner and the trainer read exactly what the pipeline used.

This module is pure Python (no TensorFlow, no Beam) so it loads in milliseconds.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10, a Cloud TPU VM's Python
    import tomli as tomllib

INPUT_FORMATS = ("csv", "jsonl", "tfrecord", "parquet")
LABEL_TYPES = ("binary", "regression")
FEATURE_TYPES = ("categorical", "sequence", "bag", "numeric")
LIST_TYPES = ("sequence", "bag")
"""Feature types whose cells hold a list of ids (a CSV cell split by list_delimiter, a JSON
array, a repeated tf.Example feature): a sequence is ordered and cut to max_sequence_length,
a bag is unordered and pooled whole by the table's combiner."""
TRUNCATE_MODES = ("keep_first", "keep_last")
COMBINERS = ("mean", "sum", "sqrtn")
OPTIMIZERS = ("adagrad", "adam", "sgd")
BIAS_SUFFIX = "__bias"
"""The model keys a feature's per-id bias under `<feature>__bias` and its table under
`<vocabulary>__bias` (embedding/columns.py): no feature or vocabulary may be named so."""


def vocabulary_file_name(vocabulary: str) -> str:
    """The file name tf.Transform gives a vocabulary under `transform_fn/assets/`.

    tf.Transform's own rule (`tensorflow_transform.analyzers.sanitized_vocab_filename`):
    every character other than a word character, a space or `-` becomes `_`, the ends are
    stripped of spaces, and each run of spaces and `-` becomes one `-`. Two vocabularies
    whose names map to one file overwrite each other's asset.
    """
    name = re.sub(r"[^\w\s-]", "_", vocabulary).strip()
    return re.sub(r"[-\s]+", "-", name)


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """How raw records are read.

    Attributes:
      format: one of csv, jsonl, tfrecord, parquet.
      list_delimiter: how a csv cell holds a sequence ("a b c").
      field_delimiter: the csv field separator.
    """

    format: str = "csv"
    list_delimiter: str = " "
    field_delimiter: str = ","


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """Train/validation/eval split by a stable hash of one column, so a key's rows never
    straddle two splits.

    Attributes:
      eval_fraction: share of keys that go to eval (reported on), in [0, 1).
      key: the column hashed; it need not be a feature.
      validation_fraction: share of keys that go to validation (the trainer selects its best
        checkpoint on it, so the eval figures are not judged on the split they were chosen
        on), in [0, 1); eval_fraction + validation_fraction < 1.
    """

    eval_fraction: float = 0.1
    key: str = ""
    validation_fraction: float = 0.0


@dataclasses.dataclass(frozen=True)
class LabelConfig:
    """Attributes:
    name: the label column.
    type: binary (0/1, sigmoid loss, AUC) or regression (MSE, RMSE).
    """

    name: str
    type: str = "binary"


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """One input column.

    Attributes:
      name: the column name in the raw data.
      type: categorical (one value a row), sequence (an ordered list of values), bag (an
        unordered list of values, pooled whole by the table's combiner) or numeric.
      vocabulary: the vocabulary (and embedding table) it shares; defaults to its own name.
      truncate: for sequences, which end survives max_sequence_length.
      max_sequence_length: for sequences, a fixed length that overrides the measured one.
      keep: keep the feature even when the planner would drop it because its eval values are
        almost all unseen in training (see embedding.planner.UNSEEN_DROP_RATE).
    """

    name: str
    type: str
    vocabulary: str | None = None
    truncate: str = "keep_last"
    max_sequence_length: int | None = None
    keep: bool = False


@dataclasses.dataclass(frozen=True)
class VocabularyConfig:
    """How one vocabulary is computed and embedded.

    Attributes:
      top_k: keep at most this many most frequent values.
      frequency_threshold: drop values seen fewer times than this.
      num_oov_buckets: hash buckets for values outside the vocabulary.
      dimension: embedding dimension for this vocabulary's table; None uses [embedding].
      shrinkable: whether `python -m embedding --tpu-type T --fit` may lower this
        vocabulary's top_k to make the tables fit a TPU slice (it prints the coverage lost).
    """

    top_k: int = 100_000
    frequency_threshold: int = 1
    num_oov_buckets: int = 1
    dimension: int | str | None = None
    shrinkable: bool = False


@dataclasses.dataclass(frozen=True)
class SequenceConfig:
    """Attributes:
    length_coverage: max_sequence_length is the smallest L with at least this share of
      sequences no longer than L.
    """

    length_coverage: float = 0.95


@dataclasses.dataclass(frozen=True)
class EmbeddingConfig:
    """How tables are embedded and trained on the TPU.

    Attributes:
      dimension: an int, or "auto" (a rule from the vocabulary size, see embedding.planner).
      combiner: how a sequence's embeddings are pooled: mean, sum or sqrtn.
      optimizer: adagrad, adam or sgd, for the embedding tables.
      learning_rate: the embedding tables' learning rate.
      clip_weight_min: optional lower clip of embedding weights.
      clip_weight_max: optional upper clip of embedding weights.
    """

    dimension: int | str = "auto"
    combiner: str = "mean"
    optimizer: str = "adagrad"
    learning_rate: float = 0.05
    clip_weight_min: float | None = None
    clip_weight_max: float | None = None


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole feature config.

    Attributes:
      input: how raw records are read.
      split: how rows are split into train and eval.
      label: the label column.
      features: the feature columns, in config order.
      vocabulary_defaults: defaults for every vocabulary.
      vocabulary_overrides: per-vocabulary settings, by vocabulary name.
      sequence: how max_sequence_length is chosen.
      embedding: how tables are embedded.
    """

    input: InputConfig
    split: SplitConfig
    label: LabelConfig
    features: tuple[FeatureConfig, ...]
    vocabulary_defaults: VocabularyConfig = VocabularyConfig()
    vocabulary_overrides: dict[str, VocabularyConfig] = dataclasses.field(default_factory=dict)
    sequence: SequenceConfig = SequenceConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()

    def feature(self, name: str) -> FeatureConfig:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    def vocabulary_of(self, feature: FeatureConfig) -> str:
        """The vocabulary a categorical or sequence feature uses (its own name by default)."""
        return feature.vocabulary or feature.name

    def vocabularies(self) -> dict[str, list[str]]:
        """Vocabulary name -> the names of the features that share it, sorted."""
        vocabularies: dict[str, list[str]] = {}
        for feature in self.features:
            if feature.type != "numeric":
                vocabularies.setdefault(self.vocabulary_of(feature), []).append(feature.name)
        return {name: sorted(features) for name, features in sorted(vocabularies.items())}

    def vocabulary_config(self, vocabulary: str) -> VocabularyConfig:
        return self.vocabulary_overrides.get(vocabulary, self.vocabulary_defaults)

    def columns(self) -> list[str]:
        """Every raw column the pipeline reads: features, label and split key."""
        names = [f.name for f in self.features] + [self.label.name]
        if self.split.key and self.split.key not in names:
            names.append(self.split.key)
        return names

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {
    "input": InputConfig,
    "split": SplitConfig,
    "label": LabelConfig,
    "feature": FeatureConfig,
    "vocabulary": VocabularyConfig,
    "sequence": SequenceConfig,
    "embedding": EmbeddingConfig,
}
"""The TOML sections and the dataclass whose fields are each one's keys (`[[feature]]` is an
array of tables; `[vocabulary.NAME]` takes the keys of `[vocabulary]`)."""


_TYPE_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


def _typed(value: Any, annotation: str, key: str, source: str) -> Any:
    """`value` checked against a field's annotation ("float", "int | str | None", ...).

    TOML has no null: None comes only from a default, where the annotation allows it.
    Booleans are not numbers, integers are accepted where a number is expected (as floats),
    and a float must be finite.
    """
    allowed = [t.strip() for t in annotation.split("|") if t.strip() != "None"]
    if value is None and "None" in annotation:
        return None
    if isinstance(value, dict | list):
        raise ConfigError(f"{source}: {key} must be a single value, got {value!r}")
    for kind in allowed:
        if kind == "bool" and isinstance(value, bool):
            return value
        if isinstance(value, bool):
            continue
        if kind == "int" and isinstance(value, int):
            return value
        if kind == "float" and isinstance(value, int | float):
            if not math.isfinite(value):
                raise ConfigError(f"{source}: {key} must be a finite number, got {value!r}")
            return float(value)
        if kind == "str" and isinstance(value, str):
            return value
    wanted = " or ".join(_TYPE_NAMES.get(kind, kind) for kind in allowed)
    raise ConfigError(f"{source}: {key} must be {wanted}, got {value!r}")


def _take(table: dict[str, Any], cls: type, where: str, source: str) -> Any:
    """Builds dataclass `cls` from a TOML table, refusing unknown keys and wrong types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {where}.{unknown[0]}; known keys in [{where}] are: "
            f"{', '.join(sorted(fields))}"
        )
    table = {
        key: _typed(value, fields[key].type, f"{where}.{key}", source)
        for key, value in table.items()
    }
    try:
        return cls(**table)
    except TypeError as e:
        missing = [
            name
            for name, f in fields.items()
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and name not in table
        ]
        raise ConfigError(f"{source}: [{where}] is missing required key {missing}") from e


def _one_of(value: Any, choices: tuple[str, ...], key: str, source: str) -> None:
    if value not in choices:
        raise ConfigError(f"{source}: {key} = {value!r} is not one of {', '.join(choices)}")


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    """Builds and validates a `Config` from parsed TOML.

    Args:
      data: the parsed TOML document.
      source: the file name, for error messages.

    Returns:
      The validated config.

    Raises:
      ConfigError: on any unknown key, unknown type, or inconsistent setting; the message
        names the source and the key.
    """
    known = set(SECTIONS)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown section [{unknown[0]}]; known sections are: "
            f"{', '.join(sorted(known))}"
        )
    for section in ("input", "split", "label", "vocabulary", "sequence", "embedding"):
        if section in data and not isinstance(data[section], dict):
            raise ConfigError(f"{source}: [{section}] must be a table")

    input_config = _take(data.get("input", {}), InputConfig, "input", source)
    _one_of(input_config.format, INPUT_FORMATS, "input.format", source)
    delimiter = input_config.field_delimiter
    if len(delimiter) != 1 or not delimiter.isascii() or delimiter in '"\r\n':
        # The CSV readers split lines of bytes on one byte: a character beyond ASCII is more.
        raise ConfigError(
            f"{source}: input.field_delimiter must be one ASCII character other than a quote "
            f"or a line break, got {delimiter!r}"
        )
    if not input_config.list_delimiter:
        raise ConfigError(f"{source}: input.list_delimiter must not be empty")
    if input_config.list_delimiter == input_config.field_delimiter:
        raise ConfigError(f"{source}: input.list_delimiter must differ from field_delimiter")
    if any(c in input_config.list_delimiter for c in "\r\n"):
        # A CSV row fits on one line: no cell holds a line break, and every list would be
        # read as one token.
        raise ConfigError(
            f"{source}: input.list_delimiter must not hold a line break, got "
            f"{input_config.list_delimiter!r}"
        )

    if "label" not in data:
        raise ConfigError(f"{source}: missing [label] section (name and type of the label)")
    label = _take(data["label"], LabelConfig, "label", source)
    _one_of(label.type, LABEL_TYPES, "label.type", source)

    raw_features = data.get("feature", [])
    if not isinstance(raw_features, list) or not raw_features:
        raise ConfigError(f"{source}: no [[feature]] entries; describe at least one feature")
    features = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_features):
        where = f"feature[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: {where} must be a table")
        if "name" in raw:
            where = f"feature[{i}] ({raw['name']!r})"
        feature = _take(raw, FeatureConfig, where, source)
        _one_of(feature.type, FEATURE_TYPES, f"{where}.type", source)
        _one_of(feature.truncate, TRUNCATE_MODES, f"{where}.truncate", source)
        if feature.name in seen:
            raise ConfigError(f"{source}: feature {feature.name!r} is described twice")
        seen.add(feature.name)
        if feature.name == label.name:
            raise ConfigError(
                f"{source}: {feature.name!r} is the label and cannot also be a feature"
            )
        if not feature.name.strip():
            raise ConfigError(f"{source}: {where}.name must not be empty")
        if feature.vocabulary is not None and not feature.vocabulary.strip():
            raise ConfigError(
                f"{source}: {where}.vocabulary must name a vocabulary; leave it out to give the "
                "feature its own"
            )
        if feature.type == "numeric" and feature.vocabulary is not None:
            raise ConfigError(
                f"{source}: numeric feature {feature.name!r} cannot have a vocabulary; "
                "remove feature.vocabulary or make it categorical"
            )
        if feature.keep and feature.type == "numeric":
            raise ConfigError(
                f"{source}: {where}.keep is for features with a vocabulary; a numeric feature "
                "is never dropped for unseen values"
            )
        if "truncate" in raw and feature.type != "sequence":
            raise ConfigError(
                f"{source}: {where}.truncate is only for sequence features (a {feature.type} "
                "feature is never cut)"
            )
        if feature.max_sequence_length is not None:
            if feature.type != "sequence":
                raise ConfigError(
                    f"{source}: {where}.max_sequence_length is only for sequence features"
                )
            length = feature.max_sequence_length
            if isinstance(length, bool) or not isinstance(length, int) or length < 1:
                raise ConfigError(f"{source}: {where}.max_sequence_length must be an integer >= 1")
        features.append(feature)
    _check_reserved_and_file_names(features, source)
    numeric = {f.name for f in features if f.type == "numeric"}
    clash = sorted(numeric & {f.vocabulary for f in features if f.vocabulary})
    if clash:
        raise ConfigError(
            f"{source}: vocabulary {clash[0]!r} is also the name of a numeric feature; "
            "a vocabulary holds categorical or sequence features only"
        )

    split = _take(data.get("split", {}), SplitConfig, "split", source)
    if not 0.0 <= split.eval_fraction < 1.0:
        raise ConfigError(f"{source}: split.eval_fraction must be in [0, 1)")
    if not 0.0 <= split.validation_fraction < 1.0:
        raise ConfigError(f"{source}: split.validation_fraction must be in [0, 1)")
    if split.eval_fraction + split.validation_fraction >= 1.0:
        raise ConfigError(
            f"{source}: split.eval_fraction + split.validation_fraction = "
            f"{split.eval_fraction + split.validation_fraction:g} leaves no rows to train on; "
            "their sum must be below 1"
        )
    if not split.key:
        raise ConfigError(f"{source}: split.key must name the column rows are split by")
    if split.key == label.name:
        raise ConfigError(
            f"{source}: split.key = {split.key!r} is the label: every row of one label value "
            "would land in one split; split by a user or session id"
        )
    keyed = next((f for f in features if f.name == split.key), None)
    if keyed is not None and keyed.type in LIST_TYPES:
        raise ConfigError(
            f"{source}: split.key = {split.key!r} is a {keyed.type} feature: a row is split by "
            "one value, so the key must be a column of one value a row (a user or session id; "
            "it may also be a categorical feature)"
        )

    vocabulary_section = dict(data.get("vocabulary", {}))
    overrides_raw = {k: v for k, v in vocabulary_section.items() if isinstance(v, dict)}
    defaults_raw = {k: v for k, v in vocabulary_section.items() if not isinstance(v, dict)}
    defaults = _take(defaults_raw, VocabularyConfig, "vocabulary", source)
    vocabulary_names = {f.vocabulary or f.name for f in features if f.type != "numeric"}
    overrides = {}
    for name, raw in overrides_raw.items():
        if name not in vocabulary_names:
            raise ConfigError(
                f"{source}: [vocabulary.{name}] names no vocabulary; vocabularies are: "
                f"{', '.join(sorted(vocabulary_names))}"
            )
        overrides[name] = _take(
            {**dataclasses.asdict(defaults), **raw}, VocabularyConfig, f"vocabulary.{name}", source
        )
    for name, vocab in [("vocabulary", defaults)] + [
        (f"vocabulary.{k}", v) for k, v in overrides.items()
    ]:
        if vocab.top_k < 1:
            raise ConfigError(f"{source}: {name}.top_k must be >= 1")
        if vocab.frequency_threshold < 1:
            raise ConfigError(f"{source}: {name}.frequency_threshold must be >= 1")
        if vocab.num_oov_buckets < 0:
            raise ConfigError(f"{source}: {name}.num_oov_buckets must be >= 0")
        _check_dimension(vocab.dimension, f"{name}.dimension", source, allow_none=True)

    sequence = _take(data.get("sequence", {}), SequenceConfig, "sequence", source)
    if not 0.0 < sequence.length_coverage <= 1.0:
        raise ConfigError(f"{source}: sequence.length_coverage must be in (0, 1]")

    embedding = _take(data.get("embedding", {}), EmbeddingConfig, "embedding", source)
    _check_dimension(embedding.dimension, "embedding.dimension", source)
    _one_of(embedding.combiner, COMBINERS, "embedding.combiner", source)
    _one_of(embedding.optimizer, OPTIMIZERS, "embedding.optimizer", source)
    if embedding.learning_rate <= 0:
        raise ConfigError(f"{source}: embedding.learning_rate must be > 0")
    low, high = embedding.clip_weight_min, embedding.clip_weight_max
    if low is not None and high is not None and low > high:
        raise ConfigError(
            f"{source}: embedding.clip_weight_min = {low} is above clip_weight_max = {high}"
        )

    return Config(
        input=input_config,
        split=split,
        label=label,
        features=tuple(features),
        vocabulary_defaults=defaults,
        vocabulary_overrides=overrides,
        sequence=sequence,
        embedding=embedding,
    )


def _check_reserved_and_file_names(features: list[FeatureConfig], source: str) -> None:
    """Refuses names the model reserves, and vocabularies that would share one asset file."""
    for feature in features:
        for what, name in (("feature", feature.name), ("vocabulary", feature.vocabulary or "")):
            if name.endswith(BIAS_SUFFIX):
                raise ConfigError(
                    f"{source}: {what} name {name!r} ends with {BIAS_SUFFIX!r}, which the model "
                    "uses for its per-id bias keys; rename it"
                )
    files: dict[str, str] = {}
    for feature in features:
        if feature.type == "numeric":
            continue
        vocabulary = feature.vocabulary or feature.name
        file_name = vocabulary_file_name(vocabulary)
        other = files.setdefault(file_name, vocabulary)
        if other != vocabulary:
            raise ConfigError(
                f"{source}: vocabularies {other!r} and {vocabulary!r} would both be written as "
                f"transform_fn/assets/{file_name} (tf.Transform turns characters other than "
                "letters, digits, _ and - into _ and spaces into -) and overwrite each other; "
                "rename one"
            )


def _check_dimension(value: Any, key: str, source: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f'{source}: {key} must be a positive integer or "auto", got {value!r}')


def load_config(path: str | Path) -> Config:
    """Reads and validates a TOML config file.

    Raises:
      ConfigError: the file is missing, is not valid TOML, or does not validate.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror}") from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    return parse_config(data, source=str(path))


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuilds a `Config` from `Config.to_dict()` output (the pipeline's config.json)."""
    return Config(
        input=InputConfig(**data["input"]),
        split=SplitConfig(**data["split"]),  # a config.json without validation_fraction: 0
        label=LabelConfig(**data["label"]),
        features=tuple(FeatureConfig(**f) for f in data["features"]),
        vocabulary_defaults=VocabularyConfig(**data["vocabulary_defaults"]),
        vocabulary_overrides={
            k: VocabularyConfig(**v) for k, v in data["vocabulary_overrides"].items()
        },
        sequence=SequenceConfig(**data["sequence"]),
        embedding=EmbeddingConfig(**data["embedding"]),
    )


def read_pipeline_config(pipeline_output: str) -> Config:
    """Reads the config the pipeline wrote into its output directory."""
    from common import artifacts

    return config_from_dict(artifacts.read_json(pipeline_output, artifacts.CONFIG))
