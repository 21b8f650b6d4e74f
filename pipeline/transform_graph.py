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
