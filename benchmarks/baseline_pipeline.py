"""The baseline: the same measurements written the way tf.Transform's census example does it.

Text lines, a CSV decode into instance dicts, `AnalyzeAndTransformDataset` on instance dicts
with the same shared vocabularies, z-score and length statistics, `ExampleProtoCoder`,
`WriteToTFRecord`. This is what a user writes by hand; `benchmarks/run.py` times it against
`python -m pipeline` on the same file.

    python -m benchmarks.baseline_pipeline --input clicks.csv --output /tmp/baseline
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile

import apache_beam as beam
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam

HEADER = ("user_id", "item_id", "history", "device", "region", "price", "clicked")
RAW_SPEC = {
    "item_id": tf.io.FixedLenFeature([], tf.string),
    "history": tf.io.VarLenFeature(tf.string),
    "device": tf.io.FixedLenFeature([], tf.string),
    "region": tf.io.FixedLenFeature([], tf.string),
    "price": tf.io.FixedLenFeature([], tf.float32),
    "clicked": tf.io.FixedLenFeature([], tf.float32),
}


def decode_line(line: str) -> dict:
    cells = dict(zip(HEADER, next(csv.reader([line])), strict=True))
    return {
        "item_id": cells["item_id"],
        "history": cells["history"].split(),
        "device": cells["device"],
        "region": cells["region"],
        "price": float(cells["price"]),
        "clicked": float(cells["clicked"]),
    }


def preprocessing_fn(inputs):
    history = tf.RaggedTensor.from_sparse(inputs["history"])
    items = tf.concat([history, tf.expand_dims(inputs["item_id"], 1)], axis=1)
    path = tft.vocabulary(items, vocab_filename="items")
    return {
        "item_id": tft.apply_vocabulary(inputs["item_id"], path, num_oov_buckets=1),
        "history": tft.apply_vocabulary(inputs["history"], path, num_oov_buckets=1),
        "device": tft.compute_and_apply_vocabulary(inputs["device"], num_oov_buckets=1),
        "region": tft.compute_and_apply_vocabulary(
            inputs["region"], frequency_threshold=3, num_oov_buckets=1
        ),
        "price": tft.scale_to_z_score(inputs["price"]),
        "clicked": inputs["clicked"],
    }


def run(input_path: str, output: str, beam_args=None) -> None:
    metadata = tft.DatasetMetadata.from_feature_spec(RAW_SPEC)
    with beam.Pipeline(argv=beam_args or []) as p:
        with tft_beam.Context(temp_dir=tempfile.mkdtemp()):
            raw = (
                p
                | "ReadLines" >> beam.io.ReadFromText(input_path, skip_header_lines=1)
                | "DecodeCsv" >> beam.Map(decode_line)
            )
            _ = (
                raw
                | "Lengths" >> beam.Map(lambda row: len(row["history"]))
                | "CountLengths" >> beam.combiners.Count.PerElement()
                | "WriteLengths" >> beam.io.WriteToText(os.path.join(output, "lengths"))
            )
            (transformed, transformed_metadata), transform_fn = (
                raw,
                metadata,
            ) | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
            coder = tft.coders.ExampleProtoCoder(transformed_metadata.schema)
            _ = (
                transformed
                | "Encode" >> beam.Map(coder.encode)
                | "Write"
                >> beam.io.WriteToTFRecord(
                    os.path.join(output, "train"), file_name_suffix=".tfrecord.gz"
                )
            )
            _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    args, beam_args = parser.parse_known_args()
    run(args.input, args.output, beam_args)


if __name__ == "__main__":
    main()
