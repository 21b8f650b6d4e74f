"""The real Cloud TPU path, offline: TPUEstimator(use_tpu=True) builds its TPU graphs here.

TPUEstimator asks the TPU for its hosts and cores through
`tensorflow.python.tpu.tpu_system_metadata._query_tpu_system_metadata`; `FakeTPU` answers
with N hosts of M cores and gives a resolver whose master is a grpc:// address. Training then
builds the real TPU train graph (infeed, the TPU embedding configuration, the replicated
step) and stops where the first `session.run` would be: `MonitoredTrainingSession` is replaced
by one that is done at once, after the graph and its Scaffold are captured. Evaluation runs on
the host CPU (`eval_on_tpu=False`), so it really runs, on a local master.

Also here: the CPU trains the tables as the TPU does (the `[embedding]` optimizer, rate and
clipping), checked step by step against the TPU's update rules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shutil
import socket

import numpy as np
import pytest

from tests.conftest import needs

# TPUEstimator is the trainer environment's: the module cannot be imported in the pipeline's.
pytest.importorskip("tensorflow_estimator", reason=needs("trainer"))

import tensorflow as tf
from tensorflow.core.protobuf.tpu import tpu_embedding_configuration_pb2
from tensorflow.python.client import session as session_lib
from tensorflow.python.framework import tensor_util
from tensorflow.python.tpu import tpu_system_metadata
from tensorflow.python.training import evaluation
from tensorflow_estimator.python.estimator import estimator as estimator_lib

from common import artifacts
from common.config import EmbeddingConfig, read_pipeline_config
from embedding.columns import (
    TPUEmbeddingAdam,
    bias_feature,
    bias_features,
    cosine_decay,
    create_feature_columns,
)
from embedding.planner import make_plan
from tests.test_planner import config as planner_config
from tests.test_planner import stats as planner_stats
from tests.test_trainer import _with_validation_split
from trainer import baselines, inputs, prepare, selection, task, tpu_setup
from trainer.model import create_model_fn

pytestmark = pytest.mark.trainer_env

MASTER = "grpc://10.240.1.2:8470"
BATCH = 64


class _DoneSession:
    """What the intercepted `MonitoredTrainingSession` returns: a session with nothing to do."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def should_stop(self):
        return True


class FakeTPU:
    """A TPU of `hosts` hosts x `cores_per_host` cores, as TPUEstimator sees it.

    Attributes:
      train_graph, scaffold: the TPU training graph and its Scaffold, as they reached
        `MonitoredTrainingSession`.
      eval_graph: the evaluation graph (it then runs locally).
      deployments: (host, number of hosts, params["batch_size"]) of each input_fn call on
        the TPU hosts.
    """

    def __init__(self, hosts: int, cores_per_host: int):
        self.hosts, self.cores_per_host = hosts, cores_per_host
        # What the Cloud TPU API would report: a v3 slice of as many cores.
        self.accelerator_type = f"v3-{hosts * cores_per_host}"
        self.train_graph = self.scaffold = self.eval_graph = None
        self.deployments = []

    def metadata(self, master_address, cluster_def=None, query_topology=False):
        assert master_address == MASTER
        devices = []
        for host in range(self.hosts):
            prefix = f"/job:worker/replica:0/task:{host}/device"
            devices.append(session_lib._DeviceAttributes(f"{prefix}:CPU:0", "CPU", 0, 0))
            devices.extend(
                session_lib._DeviceAttributes(f"{prefix}:TPU:{core}", "TPU", 0, 0)
                for core in range(self.cores_per_host)
            )
        return tpu_system_metadata.TPUSystemMetadata(
            self.hosts * self.cores_per_host, self.hosts, self.cores_per_host, None, devices
        )

    def resolver_class(self):
        workers = [f"10.240.1.{2 + host}:8470" for host in range(self.hosts)]

        class FakeTPUClusterResolver(tf.distribute.cluster_resolver.ClusterResolver):
            def __init__(self, tpu=None, zone=None, project=None):
                # TPUEstimator asks it whether Cloud TPU's API can report preemption: no.
                from tensorflow.python.distribute.cluster_resolver.tpu import (
                    tpu_cluster_resolver,
                )

                self._cloud_tpu_client = tpu_cluster_resolver._LocalCloudTpuClient()

            def cluster_spec(self):
                return tf.train.ClusterSpec({"worker": workers})

            def master(self, task_type=None, task_id=None, rpc_layer=None):
                return MASTER

            @property
            def environment(self):
                return ""

        return FakeTPUClusterResolver

    @contextlib.contextmanager
    def installed(self):
        real_evaluate = evaluation._evaluate_once
        real_deployment = inputs.input_deployment

        def monitored_training_session(**kwargs):
            assert kwargs["master"] == MASTER
            self.train_graph = tf.compat.v1.get_default_graph()
            self.scaffold = kwargs["scaffold"]
            return _DoneSession()

        def evaluate_locally(**kwargs):
            self.eval_graph = tf.compat.v1.get_default_graph()
            return real_evaluate(**{**kwargs, "master": "", "config": None})

        def input_deployment(params):
            host, hosts = real_deployment(params)
            if params.get("context") is not None:
                self.deployments.append((host, hosts, params["batch_size"]))
            return host, hosts

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tpu_system_metadata, "_query_tpu_system_metadata", self.metadata)
            patch.setattr(
                tf.distribute.cluster_resolver, "TPUClusterResolver", self.resolver_class()
            )
            patch.setattr(
                estimator_lib.training, "MonitoredTrainingSession", monitored_training_session
            )
            patch.setattr(evaluation, "_evaluate_once", evaluate_locally)
            patch.setattr(inputs, "input_deployment", input_deployment)
            patch.setattr(tpu_setup, "tpu_type_from_api", lambda *_: self.accelerator_type)
            yield self


def _args(output, model_dir, *extra):
    return task.parse_args(
        [
            "--pipeline-output",
            str(output),
            "--model-dir",
            str(model_dir),
            "--batch-size",
            str(BATCH),
            "--save-checkpoints-steps",
            "5",
            "--no-export",
            *extra,
        ]
    )


TPU_FLAGS = ("--use-tpu", "--tpu", "my-tpu", "--iterations-per-loop", "4")
NO_PERIODIC = ("--eval-every-steps", "0")


def _library_nodes(graph: tf.Graph, op_type: str) -> list:
    """The nodes of one type in the graph's functions (the TPU loops are while_v2 bodies)."""
    return [
        (function.signature.name, node)
        for function in graph.as_graph_def().library.function
        for node in function.node_def
        if node.op == op_type
    ]


def _embedding_configuration(graph: tf.Graph):
    nodes = _library_nodes(graph, "RecvTPUEmbeddingActivations")
    assert len(nodes) == 1, "the TPU train step receives the activations once"
    return tpu_embedding_configuration_pb2.TPUEmbeddingConfiguration.FromString(
        nodes[0][1].attr["config"].s
    )


def _bias_table(plan, feature) -> str:
    """The TPU table of a categorical feature's per-id bias: a shared one is named after its
    collection (TABLE__bias), a single column after its key (FEATURE__bias)."""
    table = plan.tables[feature.table]
    categorical = [n for n in table.features if plan.features[n].type == "categorical"]
    return f"tbl_{table.name if len(categorical) > 1 else feature.name}__bias"


def _expected_tables(plan, key_features=()) -> dict[str, tuple[int, int]]:
    """TPU table name -> (buckets, dimension): each planned table, and the per-id bias table
    (dimension 1) of the categorical features of each, shared like the main table. A split
    key's term (`key_features`) has its bias table only."""
    expected = {
        f"tbl_{n}": (t.vocabulary_size, t.dimension)
        for n, t in plan.tables.items()
        if set(t.features) - set(key_features)
    }
    for feature in plan.features.values():
        if feature.type == "categorical":
            expected[_bias_table(plan, feature)] = (plan.tables[feature.table].vocabulary_size, 1)
    return expected


def _assert_configuration_is_the_plan(
    configuration, plan, embedding, hosts, cores, sequences_pooled=True, key_features=()
):
    """The TPU's embedding configuration holds the plan's tables and the bias tables, and
    its features: a sequence is [per-core batch, L] when the model attends over it and
    pooled by the embedding cores ([per-core batch]) when the model only averages it."""
    tables = {t.name: t for t in configuration.table_descriptor}
    expected_tables = _expected_tables(plan, key_features)
    assert set(tables) == set(expected_tables)
    bias_tables = {_bias_table(plan, f) for f in plan.features.values() if f.type == "categorical"}
    for name, (buckets, dimension) in expected_tables.items():
        descriptor = tables[name]
        assert descriptor.vocabulary_size == buckets
        assert descriptor.dimension == dimension
        parameters = descriptor.optimization_parameters
        assert parameters.WhichOneof("parameters") == embedding.optimizer
        if name in bias_tables:
            # The bias tables' rate falls over the training steps (--id-bias-decay): a
            # rate the train step sends with the gradients, one for all of them.
            assert parameters.learning_rate.WhichOneof("learning_rate") == "dynamic"
            assert parameters.learning_rate.dynamic.tag == 0
        else:
            assert parameters.learning_rate.constant == pytest.approx(embedding.learning_rate)
        if embedding.clip_weight_max is not None:
            assert parameters.clipping_limits.upper.value == pytest.approx(
                embedding.clip_weight_max
            )
    assert configuration.num_hosts == hosts
    assert configuration.num_tensor_cores == cores
    per_core = BATCH // cores
    names = sorted(tables)
    shapes = sorted(
        (names[f.table_id], list(f.input_shape)) for f in configuration.feature_descriptor
    )
    expected = [
        (
            f"tbl_{feature.table}",
            [per_core, feature.max_sequence_length]
            if feature.type == "sequence" and not sequences_pooled
            else [per_core],
        )
        for feature in plan.features.values()
        if feature.name not in key_features
    ]
    # Each categorical feature also looks its ids up in its bias table, one id a row.
    expected += [
        (_bias_table(plan, f), [per_core])
        for f in plan.features.values()
        if f.type == "categorical"
    ]
    assert shapes == sorted(expected)


def _assert_static_infeed(graph: tf.Graph, hosts: int, cores: int):
    enqueues = _library_nodes(graph, "InfeedEnqueueTuple")
    assert len(enqueues) == cores, "one infeed a core"
    for _, node in enqueues:
        for shape in node.attr["shapes"].list.shape:
            assert not shape.unknown_rank
            sizes = [d.size for d in shape.dim]
            assert all(size >= 0 for size in sizes), f"dynamic infeed shape {sizes}"
            assert not sizes or sizes[0] == BATCH // cores
    loops = {name for name, _ in enqueues}
    assert len(loops) == hosts, "one input loop per host"


def _host_files_in_graph(graph: tf.Graph) -> dict[str, list[str]]:
    """Device -> the file list constant each host's dataset starts from."""
    found = {}
    for op in graph.get_operations():
        if op.type != "TensorSliceDataset":
            continue
        source = op.inputs[0].op
        while source.type == "Identity":
            source = source.inputs[0].op
        assert source.type == "Const"
        values = tensor_util.MakeNdarray(source.get_attr("value"))
        found[op.device] = [v.decode() for v in values]
    return found


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _restore_and_save(graph, scaffold, checkpoint, directory, hosts: int) -> str:
    """Restores `checkpoint` with the TPU graph's own Saver ops and saves what they restored.

    The Saver is the Scaffold's, as `MonitoredTrainingSession` would finalize it.

    The Saver's ops sit on the TPU hosts' CPUs (`/job:worker/task:N`): in-process TensorFlow
    servers stand in for the hosts. A session places the whole graph and the TPU ops have no
    CPU kernels, so the Saver's subgraph (its restore and save ops, the variables, their
    devices) is run as extracted from the TPU graph.
    """
    with graph.as_default():
        scaffold.finalize()
    saver_def = scaffold.saver.saver_def
    save_tensor = saver_def.save_tensor_name
    subgraph = tf.compat.v1.graph_util.extract_sub_graph(
        graph.as_graph_def(), [saver_def.restore_op_name, save_tensor.split(":")[0]]
    )
    copy = tf.Graph()
    with copy.as_default():
        tf.graph_util.import_graph_def(subgraph, name="")
    cluster = tf.train.ClusterSpec({"worker": [f"localhost:{_free_port()}" for _ in range(hosts)]})
    servers = [
        tf.distribute.Server(cluster, job_name="worker", task_index=i, start=True)
        for i in range(hosts)
    ]
    step = tf.train.load_checkpoint(checkpoint).get_tensor("global_step")
    path = str(directory / f"model.ckpt-{step}")
    with tf.compat.v1.Session(servers[0].target, graph=copy) as session:
        session.run(saver_def.restore_op_name, {saver_def.filename_tensor_name: checkpoint})
        session.run(save_tensor, {saver_def.filename_tensor_name: path})
    tf.compat.v1.train.update_checkpoint_state(str(directory), path)
    return path


def _checkpoint_values(path: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


@pytest.fixture(scope="module")
def cpu_model(small_pipeline_output, tmp_path_factory):
    """A model trained 10 steps on CPU."""
    model_dir = tmp_path_factory.mktemp("cpu") / "model"
    task.train_and_evaluate(
        _args(small_pipeline_output["output"], model_dir, "--train-steps", "10")
    )
    return str(model_dir)


@pytest.mark.slow
def test_tpu_1_host_8_cores_resumes_a_cpu_checkpoint_and_evaluates_the_whole_split(
    small_pipeline_output, cpu_model, tmp_path
):
    output, plan = small_pipeline_output["output"], small_pipeline_output["plan"]
    model_dir = tmp_path / "model"
    shutil.copytree(cpu_model, model_dir)
    tpu = FakeTPU(hosts=1, cores_per_host=8)
    with tpu.installed():
        metrics = task.train_and_evaluate(
            _args(output, model_dir, "--train-steps", "20", *TPU_FLAGS)
        )

    embedding = read_pipeline_config(output).embedding
    _assert_configuration_is_the_plan(
        _embedding_configuration(tpu.train_graph), plan, embedding, hosts=1, cores=8
    )
    _assert_static_infeed(tpu.train_graph, hosts=1, cores=8)
    assert tpu.deployments == [(0, 1, BATCH // 8)]

    # The CPU checkpoint restores into the TPU graph, and what the TPU graph saves is
    # exactly what the CPU saved: no TPU-only variable in it, none missing.
    cpu_checkpoint = tf.train.latest_checkpoint(str(model_dir))
    saved = _restore_and_save(tpu.train_graph, tpu.scaffold, cpu_checkpoint, tmp_path, 1)
    cpu_values, tpu_values = _checkpoint_values(cpu_checkpoint), _checkpoint_values(saved)
    assert sorted(tpu_values) == sorted(cpu_values)
    for name, value in cpu_values.items():
        np.testing.assert_array_equal(tpu_values[name], value, err_msg=name)
    assert tpu_values["items"].shape == (plan.tables["items"].vocabulary_size, 40)

    # Evaluation of the TPU estimator ran on the host CPU over the whole eval split.
    eval_ops = {op.type for op in tpu.eval_graph.get_operations()}
    assert not any("TPU" in t or "Infeed" in t for t in eval_ops)
    stats = artifacts.read_json(output, artifacts.STATS)
    assert metrics["examples"] == stats["rows"]["eval"] > BATCH
    assert metrics["global_step"] == 10  # the CPU checkpoint: the TPU step never ran
    written = artifacts.read_json(str(model_dir), selection.EVAL_METRICS)
    assert written["examples"] == stats["rows"]["eval"]


def _shard(files: list[str], directory, count: int) -> list[str]:
    """The records of `files` dealt round-robin into `count` gzip TFRecord files."""
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator())
    paths = [str(directory / f"train-{i:05d}-of-{count:05d}.tfrecord.gz") for i in range(count)]
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for i, path in enumerate(paths):
        with tf.io.TFRecordWriter(path, options) as writer:
            for record in records[i::count]:
                writer.write(record)
    return paths


@pytest.mark.slow
def test_tpu_pod_2_hosts_16_cores_adam_splits_input_by_host_and_moves_checkpoints(
    small_pipeline_output, tmp_path, monkeypatch
):
    plan = small_pipeline_output["plan"]
    # A validation split: the bias tables start from its best single feature's counts.
    output = _with_validation_split(small_pipeline_output["output"], tmp_path / "out", monkeypatch)
    adam = EmbeddingConfig(optimizer="adam", learning_rate=0.01, clip_weight_max=0.5)
    real_config = read_pipeline_config

    def config_with_adam(path):
        return dataclasses.replace(real_config(path), embedding=adam)

    monkeypatch.setattr(prepare, "read_pipeline_config", config_with_adam)
    shards = _shard(artifacts.data_files(output, "train"), tmp_path, 4)
    real_files = artifacts.Manifest.data_files
    monkeypatch.setattr(
        artifacts.Manifest,
        "data_files",
        lambda manifest, split: shards if split == "train" else real_files(manifest, split),
    )

    cpu_dir = tmp_path / "cpu"
    # This model attends over the history: the TPU looks it up as a sequence.
    attention = "--history-attention"
    task.train_and_evaluate(_args(output, cpu_dir, "--train-steps", "6", attention, *NO_PERIODIC))
    cpu_checkpoint = tf.train.latest_checkpoint(str(cpu_dir))
    assert "items/Adam/m" in _checkpoint_values(cpu_checkpoint)

    model_dir = tmp_path / "model"
    shutil.copytree(cpu_dir, model_dir)
    tpu = FakeTPU(hosts=2, cores_per_host=16)
    with tpu.installed():
        metrics = task.train_and_evaluate(
            _args(output, model_dir, "--train-steps", "12", attention, *NO_PERIODIC, *TPU_FLAGS)
        )
    graph = tpu.train_graph
    _assert_configuration_is_the_plan(
        _embedding_configuration(graph), plan, adam, hosts=2, cores=32, sequences_pooled=False
    )
    _assert_static_infeed(graph, hosts=2, cores=32)

    # Each host reads its own files, disjoint, together all of them.
    assert sorted(tpu.deployments) == [(0, 2, 2), (1, 2, 2)]
    by_host = _host_files_in_graph(graph)
    assert sorted(by_host) == ["/job:worker/task:0/device:CPU:0", "/job:worker/task:1/device:CPU:0"]
    first, second = by_host.values()
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(shards)

    # CPU -> TPU: the CPU's Adam checkpoint restores into the 2-host graph (tables split in
    # two per host); TPU -> CPU: what that graph saves resumes training on CPU.
    tpu_dir = tmp_path / "tpu"
    tpu_dir.mkdir()
    for written in (artifacts.PLAN, "training_config.json"):  # as the TPU run writes them
        shutil.copy(model_dir / written, tpu_dir / written)
    saved = _restore_and_save(graph, tpu.scaffold, cpu_checkpoint, tpu_dir, 2)
    tpu_values = _checkpoint_values(saved)
    assert sorted(tpu_values) == sorted(_checkpoint_values(cpu_checkpoint))
    np.testing.assert_array_equal(
        tpu_values["items/Adam/v"], _checkpoint_values(cpu_checkpoint)["items/Adam/v"]
    )
    parts = [v for v in graph.get_collection("variables") if v.op.name.startswith("items/part")]
    assert len(parts) == 2
    _assert_bias_tables_start_at_the_log_odds(
        graph, plan, shards, artifacts.data_files(output, "validation")
    )
    resumed = task.train_and_evaluate(
        _args(output, tpu_dir, "--train-steps", "8", attention, *NO_PERIODIC)
    )
    assert resumed["trained_from_step"] == 6
    assert resumed["global_step"] == 8

    stats = artifacts.read_json(output, artifacts.STATS)
    assert metrics["examples"] == stats["rows"]["eval"]


def _assert_bias_tables_start_at_the_log_odds(
    graph: tf.Graph, plan, train_files, validation_files
) -> None:
    """The TPU graph initializes each bias table, split over the hosts, where the CPU graph
    does: the best single feature's on validation at its training log-odds
    (`baselines.initial_biases`), every other one at 0."""
    # The flag's default factor on the bias: the bias tables hold log-odds / scale.
    scale = task.parse_args(["--pipeline-output", "o", "--model-dir", "m", "--train-steps", "1"])
    sums = baselines.split_sums(train_files, plan)
    best = baselines.measure(train_files, validation_files, plan, sums)["best_baseline"]
    expected, _ = baselines.initial_biases(sums, plan, scale.id_bias_scale, [best])
    assert list(expected) == [plan.features[best].table]
    variables = graph.get_collection("variables")
    tables = {
        plan.features[n].table for n in plan.features if plan.features[n].type == "categorical"
    }
    for table in sorted(tables):
        categorical = [
            n for n in plan.tables[table].features if plan.features[n].type == "categorical"
        ]
        name = f"{table if len(categorical) > 1 else categorical[0]}__bias"
        # A shared table is TABLE__bias, a single column's bias_F/F__bias_embedding/...
        parts = sorted(
            (
                v
                for v in variables
                if re.fullmatch(rf"(.*/)?{name}(_embedding/embedding_weights)?/part_\d+", v.op.name)
            ),
            key=lambda v: v.op.name,
        )
        assert len(parts) == 2, (name, [v.op.name for v in variables if "__bias" in v.op.name])
        with graph.as_default():
            initial_names = [p.initial_value.name for p in parts]
        subgraph = tf.compat.v1.graph_util.extract_sub_graph(
            graph.as_graph_def(), [n.split(":")[0] for n in initial_names]
        )
        for node in subgraph.node:
            node.device = ""
        copy = tf.Graph()
        with copy.as_default():
            tf.graph_util.import_graph_def(subgraph, name="")
        with tf.compat.v1.Session(graph=copy) as session:
            initial = np.concatenate(session.run(initial_names))[:, 0]
        if table in expected:
            np.testing.assert_allclose(initial, expected[table], rtol=1e-6, err_msg=name)
            assert np.abs(initial).max() > 0.01, "measured rates, not zeros"
        else:
            np.testing.assert_array_equal(initial, 0.0, err_msg=name)


def _per_host_batches(files, plan, host, hosts):
    class Context:
        def current_input_fn_deployment(self):
            return ("", host, hosts, 1)

    input_fn = inputs.make_input_fn(files, plan, training=True, drop_remainder=True, seed=42)
    features, labels = next(iter(input_fn({"batch_size": 16, "context": Context()})))
    return features["item_id"].values.numpy(), labels.numpy()


@pytest.mark.slow
def test_hosts_read_different_examples(small_pipeline_output, tmp_path):
    plan = small_pipeline_output["plan"]
    shards = _shard(artifacts.data_files(small_pipeline_output["output"], "train"), tmp_path, 2)
    first = _per_host_batches(shards, plan, 0, 2)
    second = _per_host_batches(shards, plan, 1, 2)
    assert not np.array_equal(first[0], second[0])
    alone = _per_host_batches(shards, plan, 0, 1)
    assert alone[0].shape == first[0].shape


@pytest.mark.slow
def test_tpu_refuses_before_building(small_pipeline_output, tmp_path):
    output = small_pipeline_output["output"]
    with FakeTPU(hosts=2, cores_per_host=16).installed() as tpu:
        with pytest.raises(task.TrainerError, match=r"--batch-size 100 .* multiple of 32"):
            task.train_and_evaluate(
                _args(
                    output, tmp_path / "a", "--train-steps", "1", *TPU_FLAGS, "--batch-size", "100"
                )
            )
        with pytest.raises(task.TrainerError, match="--num-shards 2"):
            task.train_and_evaluate(_args(output, tmp_path / "b", "--train-steps", "1", *TPU_FLAGS))
    assert tpu.train_graph is None


def test_host_files():
    files = [f"f{i}" for i in range(5)]
    assert inputs.host_files(files, 0, 2) == ["f0", "f2", "f4"]
    assert inputs.host_files(files, 1, 2) == ["f1", "f3"]
    with pytest.raises(inputs.InputError, match="2 input file.* for 4 TPU hosts.*--num-shards 4"):
        inputs.host_files(files[:2], 0, 4)


def test_batch_must_split_over_the_cores():
    tpu_setup.check_tpu_batch(256, 32, 4)
    with pytest.raises(task.TrainerError, match="use a multiple of 8, e.g. 96 or 104"):
        tpu_setup.check_tpu_batch(100, 8, 1)


# The CPU trains the tables as the TPU does.


def _small_plan():
    return make_plan(planner_stats(), planner_config())


IDS = [[1, 2], [3, 0]]  # as dense rows; from_dense drops the 0s: ids 1, 2 and 3


def _looked_up(table: np.ndarray) -> np.ndarray:
    rows = np.zeros(len(table), bool)
    rows[[1, 2, 3]] = True
    return rows


def _one_cpu_step(
    embedding: EmbeddingConfig,
    optimizer: str = "adagrad",
    bias_learning_rate_fn=None,
    global_step: int = 0,
    table: str = "items",
):
    """One CPU training step of the model_fn at `global_step`; returns the table named `table`
    before and after, and its gradient in that step (as a dense array)."""
    graph = tf.Graph()
    with graph.as_default():
        step, spec = _cpu_train_spec(embedding, optimizer, bias_learning_rate_fn)
        variable = next(v for v in tf.compat.v1.trainable_variables() if v.op.name == table)
        gradient = tf.convert_to_tensor(tf.gradients(spec.loss, variable)[0])
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(step.assign(global_step))
            before, grad = session.run([variable, gradient])
            session.run(spec.train_op)
            after = session.run(variable)
            names = sorted(v.op.name for v in tf.compat.v1.global_variables())
    return before, grad, after, names


def _cpu_train_spec(embedding: EmbeddingConfig, optimizer: str, bias_learning_rate_fn=None):
    """The global step and the TRAIN spec of the small plan's CPU model_fn, in the default
    graph."""
    plan = _small_plan()
    tf.compat.v1.set_random_seed(1)
    features = {}
    for name in plan.features:
        features[name] = tf.sparse.from_dense(tf.constant(IDS, tf.int64))
    for name in bias_features(plan):
        features[bias_feature(name)] = features[name]
    for name in plan.numeric_features:
        features[name] = tf.constant([0.5, -1.0])
    step = tf.compat.v1.train.create_global_step()
    spec = create_model_fn(
        plan,
        optimizer=optimizer,
        embedding=embedding,
        bias_learning_rate_fn=bias_learning_rate_fn,
    )(features, tf.constant([1.0, 0.0]), tf.estimator.ModeKeys.TRAIN, {}, None)
    return step, spec


def _before(op) -> set:
    """The ops `op` waits for: its inputs' and control inputs' ops, transitively."""
    seen, todo = set(), [op]
    while todo:
        current = todo.pop()
        for parent in [t.op for t in current.inputs] + list(current.control_inputs):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


@pytest.mark.parametrize("optimizer", ["adagrad", "adam"])
def test_cpu_moves_the_step_on_after_every_read_of_it(optimizer):
    """Every read of the global step in the train op (the bias tables' decaying rate) comes
    before its increment, and so does every update. An increment free to run beside the table
    updates gave the bias tables this step's rate or the next one's by thread timing: the same
    seed trained a slightly different model now and then."""
    graph = tf.Graph()
    with graph.as_default():
        step, spec = _cpu_train_spec(
            EmbeddingConfig(optimizer="sgd", learning_rate=0.5),
            optimizer,
            cosine_decay(0.5, total_steps=10),
        )
    ops = _before(spec.train_op) | {spec.train_op}
    on_step = [op for op in ops if op.inputs and op.inputs[0].op == step.handle.op]
    (increment,) = [op for op in on_step if op.type == "AssignAddVariableOp"]
    first = _before(increment)
    reads = [op for op in on_step if op.type == "ReadVariableOp"]
    assert reads and all(op in first for op in reads)
    updates = [op for op in ops if op.type.startswith(("ResourceApply", "ResourceSparseApply"))]
    assert len(updates) >= 3 and all(op in first for op in updates)


def test_cpu_trains_the_tables_with_the_embedding_optimizer_rate_and_clipping():
    embedding = EmbeddingConfig(
        optimizer="sgd", learning_rate=0.5, clip_weight_min=-0.05, clip_weight_max=0.05
    )
    before, grad, after, _ = _one_cpu_step(embedding, optimizer="adagrad")
    touched = _looked_up(before)
    np.testing.assert_allclose(
        after[touched], np.clip(before[touched] - 0.5 * grad[touched], -0.05, 0.05), atol=1e-6
    )
    # Rows not looked up are not updated, nor clipped (the TPU clips what it updates).
    np.testing.assert_array_equal(after[~touched], before[~touched])
    assert np.abs(before[~touched]).max() > 0.05


def test_cpu_adam_is_the_tpu_adam_and_names_its_slots_as_the_tpu():
    before, grad, after, names = _one_cpu_step(EmbeddingConfig(optimizer="adam", learning_rate=0.1))
    assert {"items/Adam/m", "items/Adam/v"} <= set(names)
    assert not [n for n in names if n.startswith("items/Adam_") or "beta1_power" in n]
    touched = _looked_up(before)
    # First step from zero moments, no bias correction, epsilon inside the square root.
    m, v = 0.1 * grad, 0.001 * grad**2
    np.testing.assert_allclose(
        after[touched], (before - 0.1 * m / np.sqrt(v + 1e-16))[touched], rtol=1e-4, atol=1e-6
    )
    np.testing.assert_array_equal(after[~touched], before[~touched])


def test_tpu_embedding_adam_is_lazy_and_sums_repeated_ids():
    variable = tf.Variable(np.ones((4, 2), np.float32))
    optimizer = TPUEmbeddingAdam(learning_rate=1.0)
    grad = tf.IndexedSlices(tf.constant([[1.0, 2.0], [1.0, 2.0]]), tf.constant([1, 1]))
    optimizer.apply_gradients([(grad, variable)])
    optimizer.apply_gradients(
        [(tf.IndexedSlices(tf.constant([[4.0, 0.0]]), tf.constant([3])), variable)]
    )
    result = variable.numpy()
    g = np.array([2.0, 4.0])  # row 1: the two gradients summed
    np.testing.assert_allclose(result[1], 1 - 0.1 * g / np.sqrt(0.001 * g**2 + 1e-16), rtol=1e-5)
    np.testing.assert_array_equal(result[[0, 2]], np.ones((2, 2)))
    m, v = optimizer.get_slot(variable, "m").numpy(), optimizer.get_slot(variable, "v").numpy()
    np.testing.assert_allclose(m[1], 0.1 * g, rtol=1e-6)  # untouched by the second step
    assert result[3, 1] == 1.0 and m[3, 1] == 0.0 and v[3, 1] == 0.0


def test_cpu_adagrad_starts_its_accumulator_where_the_tpu_does():
    before, grad, after, names = _one_cpu_step(
        EmbeddingConfig(optimizer="adagrad", learning_rate=0.3), optimizer="sgd"
    )
    assert "items/Adagrad" in names
    initial = tf.compat.v1.tpu.experimental.AdagradParameters(0.3).initial_accumulator
    touched = _looked_up(before)
    np.testing.assert_allclose(
        after[touched],
        (before - 0.3 * grad / np.sqrt(initial + grad**2))[touched],
        rtol=1e-5,
        atol=1e-6,
    )


def test_cpu_trains_the_bias_tables_at_the_decaying_rate_the_tpu_gets():
    """The bias tables' rate is the columns' learning_rate_fn of the global step, on CPU as
    on a TPU; the other tables keep the `[embedding]` rate."""
    embedding = EmbeddingConfig(optimizer="sgd", learning_rate=0.5)
    decay = cosine_decay(0.5, total_steps=10)
    bias_table = bias_table_variable(_small_plan())
    for step, rate in ((0, 0.5), (5, 0.25), (10, 0.0), (12, 0.0)):
        before, grad, after, _ = _one_cpu_step(
            embedding, bias_learning_rate_fn=decay, global_step=step, table=bias_table
        )
        touched = _looked_up(before)
        assert np.abs(grad[touched]).max() > 0
        np.testing.assert_allclose(after, before - rate * grad, atol=1e-7, err_msg=str(step))
        before, grad, after, _ = _one_cpu_step(
            embedding, bias_learning_rate_fn=decay, global_step=step
        )
        np.testing.assert_allclose(after, before - 0.5 * grad, atol=1e-6, err_msg=str(step))


def bias_table_variable(plan) -> str:
    """The CPU variable of the `items` table's per-id bias."""
    graph = tf.Graph()
    with graph.as_default():
        features = {}
        for name in plan.features:
            features[name] = tf.sparse.from_dense(tf.constant(IDS, tf.int64))
        for name in bias_features(plan):
            features[bias_feature(name)] = features[name]
        columns = create_feature_columns(plan, id_bias=True)
        (name, column), *_ = sorted(columns.bias.items())
        tf.compat.v1.keras.layers.DenseFeatures([column], name=f"bias_{name}")(features)
        (variable,) = tf.compat.v1.trainable_variables()
    return variable.op.name


@pytest.mark.slow
def test_tpu_resumes_inside_a_segment_by_skipping_a_batch_per_core_a_step(
    small_pipeline_output, cpu_model, tmp_path
):
    # The CPU checkpoint is at step 10; with evaluations every 4 steps the segment began at
    # 8, so the resumed run reads again 2 steps' batches: on a host of 8 cores, 16 of the
    # per-core batches its dataset gives (PER_HOST_V2), dropped before the infeed.
    output = small_pipeline_output["output"]
    model_dir = tmp_path / "model"
    shutil.copytree(cpu_model, model_dir)
    tpu = FakeTPU(hosts=1, cores_per_host=8)
    flags = ("--train-steps", "12", "--eval-every-steps", "4", *TPU_FLAGS)
    with tpu.installed():
        task.train_and_evaluate(_args(output, model_dir, *flags))
    skips = [op for op in tpu.train_graph.get_operations() if op.type == "SkipDataset"]
    assert len(skips) == 1
    count = tf.get_static_value(skips[0].inputs[1])
    if count is None:  # a Const feeding it
        count = tf.make_ndarray(skips[0].inputs[1].op.get_attr("value"))
    assert int(count) == 2 * 8
