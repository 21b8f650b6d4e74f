"""The TFRecord writer: standard TFRecord framing, gzip'd, in the number of files asked for."""

import glob

import apache_beam as beam
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline

from pipeline.sinks import WriteTFRecordLists, tfrecord_frames


def test_tfrecord_frames_match_tensorflows_writer(tmp_path):
    records = [b"", b"x", b"a longer record \x00\xff" * 50]
    path = str(tmp_path / "reference.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    with open(path, "rb") as f:
        assert tfrecord_frames(records) == f.read()


def test_lists_of_records_are_written_once_each_into_the_shards_asked_for(tmp_path):
    lists = [[f"record {i}-{j}".encode() for j in range(i % 4)] for i in range(20)]
    prefix = str(tmp_path / "data" / "train")
    with TestPipeline() as p:
        _ = p | beam.Create(lists) | WriteTFRecordLists(prefix, ".tfrecord.gz", num_shards=4)
    files = sorted(glob.glob(prefix + "*"))
    assert [f[len(prefix) :] for f in files] == [f"-{i:05d}-of-00004.tfrecord.gz" for i in range(4)]
    read = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    assert sorted(read) == sorted(record for records in lists for record in records)
