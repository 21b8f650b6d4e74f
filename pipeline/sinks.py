"""Writing transformed tf.Examples: TFRecord files written a record batch at a time."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

import apache_beam as beam
from apache_beam.io.filebasedsink import FileBasedSink
from apache_beam.io.filesystem import CompressionTypes

# Google's CRC32C in C (google-crc32c comes with apache-beam[gcp]); crcmod, which Beam's own
# TFRecord sink falls back to without python-snappy, is several times slower.
from google_crc32c import value as _crc32c


def masked_crc32c(data: bytes) -> int:
    """The masked CRC32C that the TFRecord framing stores."""
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frames(records: Iterable[bytes]) -> bytes:
    """Records in the TFRecord framing: length, its masked CRC32C, data, the data's CRC."""
    parts = []
    for record in records:
        length = struct.pack("<Q", len(record))
        parts += (
            length,
            struct.pack("<I", masked_crc32c(length)),
            record,
            struct.pack("<I", masked_crc32c(record)),
        )
    return b"".join(parts)


class _FastGzipFile:
    """A file written as gzip at compression level 1: about twice as fast to write as the
    default level 6, about 10% larger on transformed examples, as fast to read."""

    def __init__(self, raw):
        self._raw = raw
        self._compressor = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS | 16)

    def write(self, data: bytes) -> None:
        self._raw.write(self._compressor.compress(data))

    def close(self) -> None:
        self._raw.write(self._compressor.flush())
        self._raw.close()


class _TFRecordListSink(FileBasedSink):
    """TFRecord files written from a list of serialized records per element, gzip'd."""

    def open(self, temp_path):
        return _FastGzipFile(super().open(temp_path))  # the sink itself writes uncompressed

    def write_record(self, file_handle, value):
        file_handle.write(tfrecord_frames(value))


class WriteTFRecordLists(beam.PTransform):
    """Lists of serialized records -> gzip TFRecord files PREFIX-SSSSS-of-NNNNN SUFFIX.

    The same files `beam.io.WriteToTFRecord` writes from one record per element, with the
    same temporary-file commit, without Beam's per-element cost for every record.

    Args:
      file_path_prefix: the files' path up to the shard number.
      file_name_suffix: what follows the shard numbers (".tfrecord.gz").
      num_shards: the number of files; 0 lets the runner decide. A shard that receives no
        record is written too, as an empty gzip file, so there are always this many.
    """

    def __init__(self, file_path_prefix: str, file_name_suffix: str, num_shards: int = 0):
        super().__init__()
        self._sink = _TFRecordListSink(
            file_path_prefix,
            coder=None,
            file_name_suffix=file_name_suffix,
            num_shards=num_shards,
            shard_name_template=None,
            mime_type="application/octet-stream",
            compression_type=CompressionTypes.UNCOMPRESSED,  # gzip'd by _FastGzipFile
        )

    def expand(self, pcoll):
        return pcoll | beam.io.Write(self._sink)
