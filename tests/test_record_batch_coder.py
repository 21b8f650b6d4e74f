"""The Beam coder of record batches: a round trip, and a size estimate that encodes nothing."""

import apache_beam as beam
import pyarrow as pa
import pytest

from pipeline import graph  # noqa: F401 (registers the coder, as the pipeline does)
from pipeline.record_batch_coder import RecordBatchCoder

pytestmark = pytest.mark.pipeline_env

BATCH = pa.RecordBatch.from_pydict(
    {
        "ids": pa.array([[b"a", b"b"], [], None, [b"\xff"]], pa.large_list(pa.large_binary())),
        "price": pa.array([[1.5], [2.0], [-0.0], [3.4e38]], pa.large_list(pa.float32())),
    }
)


@pytest.mark.parametrize("batch", [BATCH, BATCH.slice(1, 2), BATCH.slice(0, 0)])
def test_a_batch_comes_back_the_same(batch):
    coder = beam.coders.registry.get_coder(pa.RecordBatch)
    assert isinstance(coder, RecordBatchCoder)
    back = coder.decode(coder.encode(batch))
    assert back.equals(batch) and back.schema == batch.schema
    impl = coder.get_impl()  # what Beam's workers call, nested in a stream too
    assert impl.decode(impl.encode(batch)).equals(batch)


def test_the_size_estimate_encodes_nothing(monkeypatch):
    coder = RecordBatchCoder()

    def refuse(_):
        raise AssertionError("encoded to estimate a size")

    monkeypatch.setattr(RecordBatchCoder, "encode", refuse)
    assert coder.get_impl().estimate_size(BATCH) == BATCH.nbytes > 0
