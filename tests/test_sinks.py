"""The TFRecord writer: standard TFRecord framing, gzip'd, in the number of files asked for."""

import glob
import gzip

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


def test_a_fixed_number_of_shards_holds_the_same_bytes_however_the_records_arrive(tmp_path):
    records = [f"record {i}".encode() * (i % 5 + 1) for i in range(500)]
    arrivals = {
        "in order, in lists of 7": [records[i : i + 7] for i in range(0, 500, 7)],
        "reversed, one list": [records[::-1]],
        "interleaved, in lists of 50": [records[i::10] for i in range(10)],
    }
    written = {}
    for name, lists in arrivals.items():
        prefix = str(tmp_path / name.replace(" ", "_").replace(",", "") / "train")
        with TestPipeline() as p:
            _ = p | beam.Create(lists) | WriteTFRecordLists(prefix, ".tfrecord.gz", num_shards=3)
        files = sorted(glob.glob(prefix + "*"))
        written[name] = {f[len(prefix) :]: gzip.open(f).read() for f in files}
    first, *others = written.values()
    assert sorted(first) == [f"-{i:05d}-of-00003.tfrecord.gz" for i in range(3)]
    assert all(len(data) > 1000 for data in first.values())  # every shard gets records
    for other in others:
        assert other == first
