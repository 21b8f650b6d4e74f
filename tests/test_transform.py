"""The transforming pass's column-wise transform against the transform graph itself.

The transform graph is built by tf.Transform from the `preprocessing_fn` on a few training
rows (a real Beam pipeline), then both transform batches the analysis never saw: values out
of every vocabulary, the empty string, bytes that are not UTF-8, line breaks, empty and null
lists, an empty vocabulary, no OOV bucket, a constant column.
"""

from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import tensorflow_transform.beam as tft_beam

from common import statistics
from common.config import parse_config
from pipeline import features, measure
from pipeline.preprocessing import PreprocessingFn
from pipeline.transform import TransformMismatch, _Resources, check_against_graph, transform

pytestmark = pytest.mark.pipeline_env

CONFIG = parse_config(
    {
        "split": {"key": "user_id"},
        "label": {"name": "clicked"},
        "feature": [
            {"name": "item_id", "type": "categorical", "vocabulary": "items"},
            {"name": "history", "type": "sequence", "vocabulary": "items"},
            {"name": "tags", "type": "bag"},
            {"name": "device", "type": "categorical"},
            {"name": "region", "type": "categorical"},
            {"name": "price", "type": "numeric"},
            {"name": "constant", "type": "numeric"},
        ],
        "vocabulary": {
            "num_oov_buckets": 3,
            "device": {"num_oov_buckets": 0},  # a value outside it maps to -1
            "region": {"frequency_threshold": 100},  # nothing kept: the placeholder entry
        },
        "embedding": {"dimension": 8},
    }
)
ADAPTER = features.tensor_adapter_config(CONFIG)
SCHEMA = ADAPTER.arrow_schema


def _batch(columns: dict) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array(columns[field.name], field.type) for field in SCHEMA], schema=SCHEMA
    )


def _one(values):
    return [[value] for value in values]


TRAIN = _batch(
    {
        "item_id": _one([b"a", b"b", b"a", b"c"]),
        "history": [[b"b", b"a"], [], [b"a", b"a", b"c"], [b"d"]],
        "tags": [[b"x"], [b"y", b"x"], [], [b"x"]],
        "device": _one([b"phone", b"web", b"phone", b"phone"]),
        "region": _one([b"north", b"south", b"north", b"east"]),
        "price": _one([1.0, 2.5, 3.0, -4.25]),
        "constant": _one([5.0, 5.0, 5.0, 5.0]),
        "clicked": _one([1.0, 0.0, 1.0, 0.0]),
    }
)

UNSEEN = ["é".encode(), b"\xff\xfe", b"x\ny", b"", b"zzz", b" a", b"A", b"0" * 300]


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """The transform graph's directory and the moments the pipeline would hand it."""
    root = tmp_path_factory.mktemp("graph")
    with beam.Pipeline() as p, tft_beam.Context(temp_dir=str(root / "tmp")):
        batches = p | beam.Create([TRAIN], reshuffle=False)
        transform_fn = (batches, ADAPTER) | tft_beam.AnalyzeDataset(PreprocessingFn(CONFIG))
        _ = transform_fn | tft_beam.WriteTransformFn(str(root / "out"))
    moments = {}
    for name in ("price", "constant"):
        values = pc.list_flatten(TRAIN.column(name)).to_numpy()
        moments[name] = statistics.mean_and_variance(len(values), *measure.exact_sums(values))
    return _Resources(CONFIG, str(root / "out" / "transform_fn")), moments


def _unseen_batch(rows: int, seed: int) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    tokens = [b"a", b"b", b"c", b"d", b"x", b"y", b"phone", b"web", b"north", *UNSEEN]

    def pick():
        return tokens[rng.integers(len(tokens))]

    def listed():
        if rng.random() < 0.1:
            return None  # a null list reads as an empty one
        return [pick() for _ in range(rng.integers(0, 6))]

    numbers = rng.choice(
        np.array([0.0, -0.0, 1.5, -2.0, 3.4e38, -3.4e38, 1e-45, 7.0, 5.0], np.float32), rows
    )
    return _batch(
        {
            "item_id": _one([pick() for _ in range(rows)]),
            "history": [listed() for _ in range(rows)],
            "tags": [listed() for _ in range(rows)],
            "device": _one([pick() for _ in range(rows)]),
            "region": _one([pick() for _ in range(rows)]),
            "price": _one(numbers.tolist()),
            "constant": _one(rng.permutation(numbers).tolist()),
            "clicked": _one(rng.integers(0, 2, rows).astype(float).tolist()),
        }
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_transform_graph_gives_the_same_values(graph, seed):
    resources, moments = graph
    raw = _unseen_batch(300, seed)
    ours = transform(raw, CONFIG, resources, moments)
    check_against_graph(raw, ours, resources, ADAPTER)  # raises on any difference
    # The rules themselves, as tf.Transform states them: items counted over item_id and
    # history (a x4, b x2, c x2, d x1: ties by token descending), OOV values hashed into the
    # 3 buckets after them; device without buckets maps an unseen value to -1; region keeps
    # nothing, so every value lands in a bucket after the placeholder entry.
    items = {b"a": 0, b"c": 1, b"b": 2, b"d": 3}
    item_ids = pc.list_flatten(ours.column("item_id")).to_numpy()
    for token, got in zip(
        pc.list_flatten(raw.column("item_id")).to_pylist(), item_ids, strict=True
    ):
        assert got == items[token] if token in items else 4 <= got < 7
    device = dict(
        zip(
            pc.list_flatten(raw.column("device")).to_pylist(),
            pc.list_flatten(ours.column("device")).to_pylist(),
            strict=True,
        )
    )
    assert all(got == {b"phone": 0, b"web": 1}.get(token, -1) for token, got in device.items())
    assert set(pc.list_flatten(ours.column("region")).to_pylist()) <= {1, 2, 3}
    lengths = [len(row or []) for row in raw.column("history").to_pylist()]
    assert pc.list_value_length(ours.column("history")).to_pylist() == lengths
    constant = pc.list_flatten(ours.column("constant")).to_numpy()
    raw_constant = pc.list_flatten(raw.column("constant")).to_numpy()
    np.testing.assert_array_equal(constant, raw_constant - np.float32(5.0))  # variance 0


def test_a_batch_without_list_values(graph):
    resources, moments = graph
    raw = _batch(
        {
            "item_id": _one([b"a"]),
            "history": [[]],
            "tags": [None],
            "device": _one([b"tv"]),
            "region": _one([b"north"]),
            "price": _one([2.0]),
            "constant": _one([5.0]),
            "clicked": _one([1.0]),
        }
    )
    ours = transform(raw, CONFIG, resources, moments)
    check_against_graph(raw, ours, resources, ADAPTER)
    assert ours.column("history").to_pylist() == [[]] and ours.column("tags").to_pylist() == [[]]


def test_a_different_id_or_number_is_caught(graph, monkeypatch):
    resources, moments = graph
    raw = _unseen_batch(50, 7)
    ours = transform(raw, CONFIG, resources, moments)
    ids = ours.column("history")
    shifted = pa.LargeListArray.from_arrays(ids.offsets, pc.add(ids.values, 1))
    wrong = ours.set_column(ours.schema.get_field_index("history"), "history", shifted)
    with pytest.raises(TransformMismatch, match="'history'"):
        check_against_graph(raw, wrong, resources, ADAPTER)
    # A variance a millionth off moves the z-scores by a few float32 ulps, which the check
    # sees: it compares bits, not within a tolerance.
    mean, variance = moments["price"]
    off = {**moments, "price": (mean, variance * (1 + 1e-6))}
    with pytest.raises(TransformMismatch, match="'price'"):
        check_against_graph(raw, transform(raw, CONFIG, resources, off), resources, ADAPTER)


def test_a_categorical_row_without_its_value_is_refused(graph):
    resources, moments = graph
    raw = _unseen_batch(3, 1)
    device = pa.array([[b"phone"], [], [b"web"]], SCHEMA.field("device").type)
    raw = raw.set_column(SCHEMA.get_field_index("device"), SCHEMA.field("device"), device)
    with pytest.raises(ValueError, match="feature 'device': a row without exactly one value"):
        transform(raw, CONFIG, resources, moments)


def test_a_missing_vocabulary_file_is_named(graph, tmp_path):
    with pytest.raises(
        FileNotFoundError, match="the transform graph has no vocabulary file .*assets/"
    ):
        _Resources(CONFIG, str(tmp_path))


def test_the_graph_traced_from_the_measurements_is_tf_transforms(graph, tmp_path):
    """The transform graph the pipeline writes from its own counts and sums (one trace, no
    analysis) transforms as tf.Transform's `AnalyzeDataset` graph of the same rows does, bit
    for bit, and tf.Transform reads the same metadata, vocabularies and asset map from it."""
    import filecmp

    import tensorflow_transform as tft

    from pipeline.transform_graph import write_transform_graph

    resources, moments = graph
    theirs_dir = Path(resources.transform_fn_dir).parent
    theirs = tft.TFTransformOutput(str(theirs_dir))
    vocabularies = {name: theirs.vocabulary_file_by_name(name) for name in CONFIG.vocabularies()}
    measuring = measure.MeasureBatches(CONFIG)
    measured = measuring.extract_output(measuring.add_input(measuring.create_accumulator(), TRAIN))
    output = tmp_path / "out"
    written = write_transform_graph(
        None, CONFIG, ADAPTER, str(output), str(tmp_path / "work"), vocabularies, measured
    )
    assert written == str(output / "transform_fn")
    assert sorted(p.name for p in output.iterdir()) == ["transform_fn", "transformed_metadata"]
    assert not list((tmp_path / "work" / "transform_graph").iterdir())  # moved, nothing left
    ours = tft.TFTransformOutput(str(output))
    metadata = tft.TFTransformOutput.TRANSFORMED_METADATA_DIR
    compared = filecmp.dircmp(theirs_dir / metadata, output / metadata)
    assert sorted(compared.same_files) == ["asset_map", "schema.pbtxt"], compared.report()
    assert ours.transformed_feature_spec() == theirs.transformed_feature_spec()
    for name in CONFIG.vocabularies():
        assert ours.vocabulary_size_by_name(name) == theirs.vocabulary_size_by_name(name)
        with open(ours.vocabulary_file_by_name(name), "rb") as a:
            with open(theirs.vocabulary_file_by_name(name), "rb") as b:
                assert a.read() == b.read(), name
    mine = _Resources(CONFIG, written)
    for seed in (3, 4):
        raw = _unseen_batch(300, seed)
        # The column-wise values, checked against tf.Transform's graph, against ours.
        check_against_graph(raw, transform(raw, CONFIG, resources, moments), mine, ADAPTER)
    # Its functions' nodes are in one order: topological, ties broken by name. Any order
    # TensorFlow's walk gives (shuffled here) is written back as the same bytes.
    _assert_one_node_order(Path(written))


def _fingerprint(saved_model_dir: Path) -> dict:
    from tensorflow.core.protobuf import fingerprint_pb2

    fingerprint = fingerprint_pb2.FingerprintDef()
    fingerprint.ParseFromString((saved_model_dir / "fingerprint.pb").read_bytes())
    fields = {f.name: v for f, v in fingerprint.ListFields()}
    fields.pop("uuid", None)  # TensorFlow gives every SavedModel written a random one
    return fields


def _assert_one_node_order(saved_model_dir: Path) -> None:
    import random

    from tensorflow.core.protobuf import saved_model_pb2

    from pipeline.transform_graph import canonical_node_order

    path = saved_model_dir / "saved_model.pb"
    written, fingerprint = path.read_bytes(), _fingerprint(saved_model_dir)
    model = saved_model_pb2.SavedModel()
    model.ParseFromString(written)
    functions = [f for g in model.meta_graphs for f in g.graph_def.library.function]
    assert sum(len(f.node_def) for f in functions) > 20
    for function in functions:
        placed = set()
        for node in function.node_def:
            sources = {edge.lstrip("^").split(":")[0] for edge in node.input}
            assert not sources & {n.name for n in function.node_def} - placed, node.name
            placed.add(node.name)
    shuffled = random.Random(0)
    for function in functions:
        nodes = list(function.node_def)
        shuffled.shuffle(nodes)
        del function.node_def[:]
        function.node_def.extend(nodes)
    path.write_bytes(model.SerializeToString(deterministic=True))
    assert path.read_bytes() != written
    canonical_node_order(str(saved_model_dir))
    assert path.read_bytes() == written
    assert _fingerprint(saved_model_dir) == fingerprint
