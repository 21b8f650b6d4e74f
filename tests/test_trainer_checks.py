"""The trainer's checks that need no TensorFlow session: pure and fast."""

import pytest

from common import artifacts
from trainer.checks import TrainerError, check_every_host_has_data


def _manifest(train_sizes):
    files = {
        f"data/train-r-{i:05d}-of-{len(train_sizes):05d}.tfrecord.gz": size
        for i, size in enumerate(train_sizes)
    }
    files["data/eval-r-00000-of-00001.tfrecord.gz"] = 300
    return artifacts.Manifest.of_files("/out", "r", "2026-11-26T00:00:00Z", files)


def test_a_host_that_would_read_only_empty_shards_is_refused():
    # A small split over many shards: shards 1 and 3 hold no examples, and host 1 of 2
    # reads exactly those.
    manifest = _manifest([500, artifacts.EMPTY_SHARD_BYTES, 480, artifacts.EMPTY_SHARD_BYTES])
    with pytest.raises(TrainerError, match=r"host\(s\) 1 of 2 would read only empty train"):
        check_every_host_has_data(manifest, 2)
    check_every_host_has_data(manifest, 1)  # one host reads all four
    check_every_host_has_data(_manifest([500, 21, 480, 22]), 2)  # 21 bytes hold data


def test_the_sinks_empty_shard_has_the_size_the_check_assumes(tmp_path):
    import io

    from pipeline.sinks import _FastGzipFile

    class Raw(io.BytesIO):
        def close(self):
            self.written = self.getvalue()
            super().close()

    raw = Raw()
    _FastGzipFile(raw).close()
    assert len(raw.written) == artifacts.EMPTY_SHARD_BYTES
