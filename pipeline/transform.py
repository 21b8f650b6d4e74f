"""The transforming pass: raw record batches -> ids and z-scores, column-wise on Arrow.

The transform graph's operations are few and work value by value: a vocabulary lookup per
categorical, sequence or bag value, a z-score per number, a cast of the label. tf.Transform's
`TransformDataset` runs them by turning every raw batch into tensors (tfx_bsl makes a Python
object and then a TensorFlow string of every value), running the graph and turning its
outputs back into a record batch; at a million rows that conversion was the largest item of
the run. Here a batch's values are encoded as a dictionary of its distinct strings (pyarrow),
only those go through the vocabulary's table, and the ids are taken back for every value.
The table is built by the code that builds the transform graph's
(`preprocessing.lookup_table`), from the graph's own asset file; the numbers go through the
graph's `preprocessing.z_score` with the mean and the variance handed to tf.Transform.

The first batch each worker transforms is also run through the transform graph itself
(tf.Transform's saved-model loader, fed by tfx_bsl's tensor conversion, as `TransformDataset`
would): every value must be the same, bit for bit, or the run stops before it commits.
"""

from __future__ import annotations

import threading

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.utils import shared

from common.config import LIST_TYPES, Config, vocabulary_file_name

CHECKED_ROWS = 256
"""Rows of a worker's first batch that the transform graph itself transforms too."""


class TransformMismatch(RuntimeError):
    """The column-wise transform and the transform graph disagree on a value."""


def _one_a_row(column: pa.Array, name: str) -> pa.Array:
    """The values of a column that holds exactly one value a row."""
    if column.null_count or pc.any(pc.not_equal(pc.list_value_length(column), 1)).as_py():
        raise ValueError(f"feature {name!r}: a row without exactly one value")
    return pc.list_flatten(column)


def _as_list(offsets: np.ndarray, values: np.ndarray) -> pa.Array:
    return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(values))


class _Resources:
    """What a worker needs to transform with one transform graph: its vocabulary tables,
    built once a process and shared by the splits."""

    def __init__(self, config: Config, transform_fn_dir: str):
        import tensorflow as tf

        from pipeline.preprocessing import lookup_table

        self.transform_fn_dir = transform_fn_dir
        self.tables = {}
        for vocabulary in config.vocabularies():
            path = tf.io.gfile.join(transform_fn_dir, "assets", vocabulary_file_name(vocabulary))
            if not tf.io.gfile.exists(path):
                raise FileNotFoundError(f"the transform graph has no vocabulary file {path}")
            settings = config.vocabulary_config(vocabulary)
            self.tables[vocabulary] = lookup_table(path, settings.num_oov_buckets)
        self._loader = None
        self._lock = threading.Lock()

    def loader(self):
        """tf.Transform's loader of the transform graph, loaded at the first call."""
        with self._lock:
            if self._loader is None:
                from tensorflow_transform.saved import saved_transform_io_v2

                self._loader = saved_transform_io_v2.SavedModelLoader(self.transform_fn_dir)
            return self._loader


def transform(
    batch: pa.RecordBatch, config: Config, resources: _Resources, moments: dict
) -> pa.RecordBatch:
    """A raw record batch -> the transformed one (the columns the transform graph outputs,
    each a list of int64 ids or float32 values a row).

    Args:
      batch: raw rows, in the layout of `pipeline.features`.
      config: the validated config.
      resources: the vocabulary tables.
      moments: feature -> (mean, variance) of each numeric feature.
    """
    import tensorflow as tf

    from pipeline.preprocessing import z_score

    rows = batch.num_rows
    single = np.arange(rows + 1, dtype=np.int64)
    columns = {}
    for vocabulary, names in config.vocabularies().items():
        table = resources.tables[vocabulary]
        for name in names:
            column = batch.column(name)
            if config.feature(name).type in LIST_TYPES:
                column = pc.fill_null(column, pa.scalar([], column.type))
                offsets = column.offsets.to_numpy()
                offsets = offsets - offsets[0]
                values = pc.list_flatten(column)
            else:
                offsets, values = single, _one_a_row(column, name)
            if values.null_count:
                raise ValueError(f"feature {name!r}: a null value")
            encoded = pc.dictionary_encode(values)
            distinct = encoded.dictionary.to_numpy(zero_copy_only=False)
            ids = table.lookup(tf.constant(distinct, tf.string)).numpy()
            columns[name] = _as_list(offsets, ids[encoded.indices.to_numpy()])
    for feature in config.features:
        if feature.type == "numeric":
            values = _one_a_row(batch.column(feature.name), feature.name).to_numpy()
            mean, variance = moments[feature.name]
            scaled = z_score(
                tf.constant(values.astype(np.float64)),
                tf.constant(mean, tf.float64),
                tf.constant(variance, tf.float64),
            )
            columns[feature.name] = _as_list(single, tf.cast(scaled, tf.float32).numpy())
    label = config.label.name
    columns[label] = _as_list(single, _one_a_row(batch.column(label), label).to_numpy())
    return pa.RecordBatch.from_pydict(columns)


def _graph_values(tensor) -> tuple[np.ndarray, np.ndarray]:
    """(row lengths, values) of a transform graph output, dense [rows] or sparse."""
    import tensorflow as tf

    if isinstance(tensor, tf.SparseTensor):
        rows = int(tensor.dense_shape[0])
        lengths = np.bincount(tensor.indices[:, 0].numpy(), minlength=rows)
        return lengths, tensor.values.numpy()
    values = tensor.numpy()
    return np.ones(len(values), np.int64), values


def check_against_graph(
    raw: pa.RecordBatch, transformed: pa.RecordBatch, resources: _Resources, adapter_config
) -> None:
    """Raises TransformMismatch unless the transform graph gives `transformed` for `raw`."""
    from tfx_bsl.tfxio import tensor_adapter

    tensors = tensor_adapter.TensorAdapter(adapter_config).ToBatchTensors(
        raw, produce_eager_tensors=True
    )
    outputs = resources.loader().apply_transform_model(tensors)
    if sorted(outputs) != sorted(transformed.schema.names):
        raise TransformMismatch(
            f"the transform graph outputs {sorted(outputs)}, "
            f"the transforming pass {sorted(transformed.schema.names)}"
        )
    for name, tensor in outputs.items():
        lengths, values = _graph_values(tensor)
        column = transformed.column(name)
        ours = pc.list_flatten(column).to_numpy()
        same = (
            np.array_equal(lengths, pc.list_value_length(column).to_numpy())
            and ours.dtype == values.dtype
            and np.array_equal(ours.view(np.uint8), values.view(np.uint8))
        )
        if not same:
            raise TransformMismatch(
                f"feature {name!r}: the transforming pass and the transform graph give "
                "different values; nothing was committed"
            )


class TransformBatches(beam.DoFn):
    """Raw record batches -> transformed record batches (see the module's doc).

    Side inputs: the transform graph's directory (tf.Transform's `transform_fn`) and the
    training split's measurements (`measure.MeasureBatches`).

    Args:
      config: the validated config.
      adapter_config: tfx_bsl's tensor adapter config of the raw batches.
      handle: a `Shared` handle, the same for every split's DoFn, so that a process loads
        the transform graph and builds its tables once.
    """

    def __init__(self, config: Config, adapter_config, handle: shared.Shared):
        self._config = config
        self._adapter_config = adapter_config
        self._shared = handle  # one for every split: one set of tables a process

    def setup(self):
        self._checked = False
        self._moments = None
        self._resources = None

    def process(self, batch: pa.RecordBatch, transform_fn_dir: str, measured):
        config = self._config
        if self._resources is None:
            # Held for the DoFn's life: Shared keeps the object only while someone holds it.
            self._resources = self._shared.acquire(
                lambda: _Resources(config, transform_fn_dir), tag=transform_fn_dir
            )
        resources = self._resources
        if self._moments is None:
            from pipeline import analyzers

            self._moments = {
                feature.name: analyzers.measured_mean_and_variance(measured, feature.name)
                for feature in config.features
                if feature.type == "numeric"
            }
        transformed = transform(batch, config, resources, self._moments)
        if not self._checked and batch.num_rows:
            check_against_graph(
                batch.slice(0, CHECKED_ROWS),
                transformed.slice(0, CHECKED_ROWS),
                resources,
                self._adapter_config,
            )
            self._checked = True
        yield transformed
