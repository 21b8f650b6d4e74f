"""The decoded rows kept between the two passes: every row comes back once, with its types,
from the files the writing stage listed only."""

from __future__ import annotations

import os

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from common import storage
from pipeline import spill

pytestmark = pytest.mark.pipeline_env

SCHEMA = pa.schema(
    [
        ("history", pa.large_list(pa.large_binary())),
        ("price", pa.large_list(pa.float32())),
    ]
)


def _batch(first: int, rows: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [
            pa.array(
                [[f"i{i}".encode(), "é".encode()][: i % 3] for i in range(first, first + rows)],
                SCHEMA.field("history").type,
            ),
            pa.array([[float(i)] for i in range(first, first + rows)], pa.large_list(pa.float32())),
        ],
        schema=SCHEMA,
    )


def _rows(batches) -> list[tuple]:
    table = pa.Table.from_batches(list(batches), schema=SCHEMA)
    return sorted(zip(*(column.to_pylist() for column in table.columns), strict=True), key=repr)


def _check(expected, batch_size: int, directory: str):
    """A check of the batches read back: the rows of `expected`, the schema, joined up to
    `batch_size` rows (only the last batch of a file may be smaller)."""

    def check(lists):
        (read,) = lists
        assert all(batch.schema == SCHEMA for batch in read)
        assert _rows(read) == _rows(expected), "other rows came back"
        files = len(storage.list_files(directory))
        assert sum(batch.num_rows < batch_size for batch in read) <= files

    return check


def test_spilled_batches_come_back_whole_joined_and_typed(any_root):
    # On the local disk, then on Cloud Storage (the emulator), as on Dataflow.
    batches = [_batch(start, rows) for start, rows in [(0, 3), (3, 1), (4, 5), (9, 2), (11, 4)]]
    directory = storage.join(any_root, "spill")
    with TestPipeline() as p:
        read = (
            p
            | beam.Create(batches, reshuffle=False)
            | spill.Spill(directory, SCHEMA, batch_size=4, file_bytes=1)
        )
        assert_that(read | beam.combiners.ToList(), _check(batches, 4, directory))
    # file_bytes=1: a file a batch.
    assert len(storage.list_files(directory)) == len(batches)


def test_a_file_nothing_listed_is_not_read(tmp_path):
    # A retried bundle leaves a file that its failed attempt wrote and nothing lists.
    directory = tmp_path / "spill"
    os.makedirs(directory)
    with pa.ipc.new_stream(str(directory / "stray.arrow"), SCHEMA) as writer:
        writer.write_batch(_batch(100, 7))
    batches = [_batch(0, 5), _batch(5, 6)]
    with TestPipeline() as p:
        read = p | beam.Create(batches) | spill.Spill(str(directory), SCHEMA, batch_size=8)
        assert_that(read | beam.combiners.ToList(), _check(batches, 8, str(directory)))


def test_read_spilled_joins_small_batches_up_to_the_batch_size(tmp_path):
    path = str(tmp_path / "one.arrow")
    with pa.ipc.new_stream(path, SCHEMA) as writer:
        for start in range(0, 10):
            writer.write_batch(_batch(start, 1))
    sizes = [batch.num_rows for batch in spill.read_spilled(path, 4)]
    assert sizes == [4, 4, 2]
    assert _rows(spill.read_spilled(path, 4)) == _rows([_batch(0, 10)])
