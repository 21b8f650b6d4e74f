"""Peak memory of the TFRecord writer (pipeline/sinks.py) against the amount of data written.

    .venv/bin/python -m benchmarks.sink_memory                 # 64, 256 and 768 MiB
    .venv/bin/python -m benchmarks.sink_memory --mib 64 1024

Each size runs in a fresh process: a DirectRunner pipeline that makes its records as it goes
(lists of 1 KiB records, from the list's number) and writes them with `WriteTFRecordLists`
into 4 shards, with a 16 MiB buffer and merges of at most 8 runs, so the larger sizes sort
through many runs and merge them in rounds. The writer holds what it buffers, and a merge its
open runs' blocks, never a whole shard: the process's peak RSS stays the same whatever the
size. Prints one line per size: data written, peak RSS, run files made, seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD_BYTES = 1024
RECORDS_PER_LIST = 1024
SHARDS = 4
BUFFER_BYTES = 16 << 20
MAX_OPEN = 8


def _records(number: int) -> list[bytes]:
    import random

    rng = random.Random(number)
    return [rng.randbytes(RECORD_BYTES) for _ in range(RECORDS_PER_LIST)]


def write(mib: int, directory: str) -> dict:
    """Writes `mib` MiB of records into `directory`; returns what it measured."""
    import glob
    import resource

    import apache_beam as beam

    from pipeline.sinks import WriteTFRecordLists

    lists = mib * (1 << 20) // (RECORD_BYTES * RECORDS_PER_LIST)
    work_dir = str(Path(directory) / ".work")
    started = time.perf_counter()
    with beam.Pipeline() as p:
        _ = (
            p
            | beam.Create(range(lists))
            | beam.Map(_records)
            | WriteTFRecordLists(
                str(Path(directory) / "train"),
                ".tfrecord.gz",
                work_dir,
                num_shards=SHARDS,
                buffer_bytes=BUFFER_BYTES,
                max_open=MAX_OPEN,
            )
        )
    return {
        "data_mib": lists * RECORDS_PER_LIST * RECORD_BYTES / (1 << 20),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "runs": len(glob.glob(str(Path(work_dir) / "*.run"))),
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, nargs="+", default=[64, 256, 768])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the measuring process
    args = parser.parse_args(argv)
    if args.one is not None:
        with tempfile.TemporaryDirectory() as directory:
            print(json.dumps(write(args.one, directory)))
        return
    print(f"{'data MiB':>9} {'peak RSS MiB':>13} {'runs':>6} {'seconds':>8}")
    for mib in args.mib:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.sink_memory", "--one", str(mib)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{measured['data_mib']:9.0f} {measured['peak_rss_mib']:13.0f} "
            f"{measured['runs']:6d} {measured['seconds']:8.1f}"
        )


if __name__ == "__main__":
    main()
