"""The decoded rows kept between the two passes, on disk: Arrow IPC files in the work directory.

The measuring pass decodes the input once; each split's record batches are also written,
as they are decoded, to Arrow IPC stream files under the run's work directory (`.work/`,
deleted before the commit), and the transforming pass reads those files instead of reading
and decoding the input again: no CSV parsing, no list splitting, no validation. The files
are not compressed: zstd or lz4 would make them four or five times smaller (the example
data's decoded batches take about 2.5 times its CSV's bytes) but cost 1.3 to 1.9 s more a
million rows (whole runs, alternating). Memory stays flat: a bundle holds one open file, written
a batch at a time, and a file is read a batch at a time.

A file is named by a random id and listed in the PCollection its writer emits; only the
files listed there are read, so a retried bundle's file, which nothing lists, is never read
twice (it goes with `.work/`). The transforming pass's rows are checked against the first
pass's counts before the commit (pipeline/run.py).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import window
from apache_beam.utils.windowed_value import WindowedValue

from common import storage
from common.process import raise_if_stopped
from common.progress import Progress
from pipeline import record_batch_coder  # noqa: F401 (Beam's coder of the batches read back)

FILE_BYTES = 256 << 20
"""A file holds about this many bytes of batches (before compression); then the bundle starts
another, so that the transforming pass has files to read in parallel on a cluster."""
PROGRESS_EVERY_S = 10.0


class _SpillBatches(beam.DoFn):
    """Record batches -> the paths of the Arrow IPC files they went to (one or more a
    bundle)."""

    def __init__(self, directory: str, schema: pa.Schema, file_bytes: int):
        self._directory = directory
        self._schema = schema
        self._file_bytes = file_bytes

    def start_bundle(self):
        self._file = self._writer = self._path = None
        self._written = 0

    def process(self, batch: pa.RecordBatch):
        if self._writer is None:
            self._path = storage.join(self._directory, f"{uuid.uuid4().hex}.arrow")
            self._file = FileSystems.create(
                self._path, "application/octet-stream", CompressionTypes.UNCOMPRESSED
            )
            self._writer = pa.ipc.new_stream(self._file, self._schema)
        self._writer.write_batch(batch)
        self._written += batch.nbytes
        if self._written >= self._file_bytes:
            yield self._close()

    def finish_bundle(self):
        if self._writer is not None:
            path = self._close()
            yield WindowedValue(
                path, window.GlobalWindow().max_timestamp(), [window.GlobalWindow()]
            )

    def _close(self) -> str:
        self._writer.close()
        self._file.close()
        path = self._path
        self._file = self._writer = self._path = None
        self._written = 0
        return path


def read_spilled(path: str, batch_size: int) -> Iterator[pa.RecordBatch]:
    """The batches of a spilled file, joined into batches of at least `batch_size` rows
    (the eval and validation splits' batches of a block are small) but the last."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        for batch in pa.ipc.open_stream(f):
            pending.append(batch)
            rows += batch.num_rows
            if rows >= batch_size:
                yield _joined(pending)
                pending, rows = [], 0
    if pending:
        yield _joined(pending)


class _ReadSpilled(beam.DoFn):
    """Paths of spilled files -> their batches (`read_spilled`), with a progress line every
    few seconds from each worker."""

    def __init__(self, batch_size: int, every_s: float):
        self._batch_size = batch_size
        self._every_s = every_s

    def setup(self):
        self._rows = 0
        self._progress = Progress(
            logging.getLogger("pipeline"),
            "transforming pass, this worker",
            unit="rows",
            every_s=self._every_s,
            bar=False,
        )

    def process(self, path: str):
        for batch in read_spilled(path, self._batch_size):
            raise_if_stopped()  # a stop whose KeyboardInterrupt a finalizer swallowed
            yield batch
            self._rows += batch.num_rows
            self._progress.update(self._rows)


def _joined(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


class Spill(beam.PTransform):
    """Record batches -> the same batches, read back from Arrow IPC files under `directory`
    in a later stage.

    The files' paths are reshuffled: that ends the stage that wrote them, so the batches
    are read back where they are consumed rather than held between the stages.

    Args:
      directory: where the files go (under the run's work directory).
      schema: the batches' Arrow schema.
      batch_size: the batches read back are joined up to this many rows.
      file_bytes: a file is closed and another started after about this many bytes.
    """

    def __init__(
        self, directory: str, schema: pa.Schema, batch_size: int, file_bytes: int = FILE_BYTES
    ):
        super().__init__()
        self._directory = directory
        self._schema = schema
        self._batch_size = batch_size
        self._file_bytes = file_bytes

    def expand(self, batches):
        return (
            batches
            | "Write" >> beam.ParDo(_SpillBatches(self._directory, self._schema, self._file_bytes))
            | "EndStage" >> beam.Reshuffle()
            | "Read"
            >> beam.ParDo(_ReadSpilled(self._batch_size, PROGRESS_EVERY_S)).with_output_types(
                pa.RecordBatch
            )
        )
