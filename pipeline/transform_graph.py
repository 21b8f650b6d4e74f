"""The transform graph, written once from the pipeline's own analysis.

tf.Transform's `AnalyzeDataset` would trace the `preprocessing_fn` three times and save two
SavedModels (the analysis phase's and the final one) to learn results the pipeline already
holds: its exact token counts give the vocabulary files (`analyzers.vocabularies`) and its
exact sums the means and variances. With those known, the `preprocessing_fn` holds no analyzer
(`preprocessing.Analyzed`), and tf.Transform's `analyze_in_place` traces it once into the same
layout: `transform_fn/` (a SavedModel whose assets are the vocabulary files) and
`transformed_metadata/` (the schema, with each id feature's domain), which
`tft.TFTransformOutput` reads. The asset map, by which `vocabulary_file_by_name` finds a
vocabulary, is written beside the schema as tf.Transform writes it.
"""

from __future__ import annotations

import heapq
import json
import uuid

from common import artifacts
from common.config import Config, vocabulary_file_name

ASSET_MAP = "asset_map"
"""tf.Transform's file of vocabulary name -> asset file name, in transformed_metadata/."""


def write_transform_graph(
    _,
    config: Config,
    adapter_config,
    output: str,
    work_dir: str,
    vocabularies: dict[str, str],
    measured: dict,
) -> str:
    """Writes OUTPUT/transform_fn and OUTPUT/transformed_metadata; returns the first's path.

    It is written in a directory of its own under the work directory, then moved into OUTPUT:
    a retried write replaces what an earlier try left.

    Args:
      _: the one element of the step that calls it.
      config: the validated config.
      adapter_config: tfx_bsl's tensor adapter config of the raw batches.
      output: where the graph goes (the run's staging directory).
      work_dir: the run's work directory.
      vocabularies: vocabulary -> the path of its file.
      measured: `measure.MeasureBatches`' result over the training split.
    """
    import tensorflow as tf
    import tensorflow_transform as tft
    from tensorflow_transform import impl_helper
    from tfx_bsl.tfxio import tensor_adapter

    from pipeline.analyzers import measured_mean_and_variance
    from pipeline.preprocessing import Analyzed, PreprocessingFn

    analyzed = Analyzed(
        vocabularies={name: vocabularies[name] for name in config.vocabularies()},
        moments={
            feature.name: measured_mean_and_variance(measured, feature.name)
            for feature in config.features
            if feature.type == "numeric"
        },
    )
    written = artifacts.join(work_dir, "transform_graph", uuid.uuid4().hex)
    impl_helper.analyze_in_place(
        PreprocessingFn(config, analyzed=analyzed),
        False,  # force_tf_compat_v1
        None,  # feature specs: for tf.compat.v1 only
        tensor_adapter.TensorAdapter(adapter_config).OriginalTypeSpecs(),
        written,
    )
    canonical_node_order(artifacts.join(written, tft.TFTransformOutput.TRANSFORM_FN_DIR))
    asset_map = {name: vocabulary_file_name(name) for name in config.vocabularies()}
    metadata = artifacts.join(written, tft.TFTransformOutput.TRANSFORMED_METADATA_DIR)
    with tf.io.gfile.GFile(artifacts.join(metadata, ASSET_MAP), "w") as f:
        f.write(json.dumps(asset_map, sort_keys=True))
    tf.io.gfile.makedirs(output)
    for name in (
        tft.TFTransformOutput.TRANSFORM_FN_DIR,
        tft.TFTransformOutput.TRANSFORMED_METADATA_DIR,
    ):
        target = artifacts.join(output, name)
        if tf.io.gfile.exists(target):
            tf.io.gfile.rmtree(target)
        tf.io.gfile.rename(artifacts.join(written, name), target)
    if tf.io.gfile.exists(written):  # on Cloud Storage no object is left under it
        tf.io.gfile.rmtree(written)
    return artifacts.join(output, tft.TFTransformOutput.TRANSFORM_FN_DIR)


def canonical_node_order(saved_model_dir: str) -> None:
    """Rewrites a SavedModel's saved_model.pb with the nodes of each function in one order,
    and its fingerprint.pb to match.

    TensorFlow prunes the transform function out of the traced graph walking a set of
    operations, so the order of the function's nodes (not its edges: each node names its
    inputs) changed from one run to the next, and with it the bytes of saved_model.pb
    between two runs on the same data. Ordered topologically, ties broken by name, the
    nodes are in one order whatever the walk's; TensorFlow connects them by name either way.
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.saved_model import fingerprinting_utils

    path = artifacts.join(saved_model_dir, "saved_model.pb")
    model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        model.ParseFromString(f.read())
    for meta_graph in model.meta_graphs:
        for function in meta_graph.graph_def.library.function:
            ordered = topological_order(function.node_def)
            del function.node_def[:]
            function.node_def.extend(ordered)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(model.SerializeToString(deterministic=True))
    fingerprinting_utils.write_fingerprint(saved_model_dir)


def topological_order(nodes) -> list:
    """NodeDefs of one function, each after the nodes it takes an input or a control edge
    from, ties broken by name."""
    by_name = {node.name: node for node in nodes}
    inputs = {
        node.name: {edge.lstrip("^").split(":")[0] for edge in node.input} & by_name.keys()
        for node in nodes
    }
    consumers: dict[str, list[str]] = {name: [] for name in by_name}
    for name, sources in inputs.items():
        for source in sources:
            consumers[source].append(name)
    waiting = {name: len(sources) for name, sources in inputs.items()}
    ready = [name for name, count in waiting.items() if not count]
    heapq.heapify(ready)
    ordered = []
    while ready:
        name = heapq.heappop(ready)
        ordered.append(by_name[name])
        for consumer in consumers[name]:
            waiting[consumer] -= 1
            if not waiting[consumer]:
                heapq.heappush(ready, consumer)
    if len(ordered) != len(by_name):
        raise ValueError("a function of the transform graph has a cycle")
    return ordered
