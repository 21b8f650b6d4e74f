"""Decoding blocks of raw records in Beam: the `DecodeBlocks` DoFn.

A block (source file, [record, ...]) from `pipeline.sources` becomes record batches of the
train split (the main output), of the validation and eval splits (tagged `validation` and
`eval`), and rejected rows with their reasons (tagged `rejected`). The decoding itself is
`pipeline.batches.BlockDecoder`; this module adds what Beam needs: counters, progress logs
and the rejected rows' records.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import apache_beam as beam

from common.config import Config
from common.process import raise_if_stopped
from common.progress import Progress
from pipeline import decode

REJECTED = "rejected"
PROGRESS_EVERY_S = 10.0
"""Seconds between two progress lines of one worker."""


def _shown(record: Any, fmt: str) -> str:
    """The raw record as text, for rejected/."""
    if fmt in ("csv", "jsonl"):
        return record.decode("utf-8", "replace").rstrip("\r")
    if fmt == "tfrecord":
        from google.protobuf import text_format
        from tensorflow.core.example import example_pb2

        try:
            return text_format.MessageToString(
                example_pb2.Example.FromString(record), as_one_line=True
            )
        except Exception:  # not an Example at all: show its bytes
            return repr(record[:1000])
    return json.dumps(record, default=str, sort_keys=True)


class DecodeBlocks(beam.DoFn):
    """(file, records) -> train record batches, and tagged validation and eval batches and
    rejected rows.

    Args:
      config, header, schema: as `pipeline.batches.BlockDecoder` takes them.
    """

    def __init__(self, config: Config, header: list[str] | None, schema):
        self._config = config
        self._header = header
        self._schema = schema
        self._rows = beam.metrics.Metrics.counter("pipeline", "rows_read")
        self._rejected = beam.metrics.Metrics.counter("pipeline", "rows_rejected")
        self._train = beam.metrics.Metrics.counter("pipeline", "rows_train")
        self._eval = beam.metrics.Metrics.counter("pipeline", "rows_eval")
        self._validation = beam.metrics.Metrics.counter("pipeline", "rows_validation")

    def setup(self):
        from pipeline.batches import BlockDecoder

        self._decoder = BlockDecoder(self._config, self._header, self._schema)
        self._seen = 0
        # A line every few seconds from each worker; a bar would garble between processes.
        self._progress = Progress(
            logging.getLogger("pipeline"),
            "measuring pass, this worker",
            unit="rows read",
            every_s=PROGRESS_EVERY_S,
            bar=False,
        )

    def process(self, element):
        raise_if_stopped()  # a stop whose KeyboardInterrupt a finalizer swallowed
        source, records = element
        self._seen += len(records)
        self._progress.update(self._seen, f"now {source}")
        block = self._decoder.decode(records)
        yield from block.train
        for split in (decode.VALIDATION, decode.EVAL):
            for batch in block.split(split):
                yield beam.pvalue.TaggedOutput(split, batch)
        self._rows.inc(len(records))
        self._train.inc(sum(batch.num_rows for batch in block.train))
        self._eval.inc(sum(batch.num_rows for batch in block.eval))
        self._validation.inc(sum(batch.num_rows for batch in block.validation))
        for index, reason in block.rejected:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(
                REJECTED,
                {
                    "file": source,
                    "row": _shown(records[index], self._config.input.format),
                    "reason": reason,
                },
            )
