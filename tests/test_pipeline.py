"""The pipeline's guarantees, each on a real DirectRunner pipeline over a few hundred rows:
every format gives the same measurements, bad rows are all accounted for, a failed run commits
nothing, and 1 or 2 workers give the same bytes."""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import tensorflow as tf

from common import artifacts, console
from embedding.planner import plan_pipeline_output
from examples.clicks import generate
from pipeline import run as pipeline_run
from pipeline import spill, transform
from pipeline.input_files import InputError
from tests.conftest import EXAMPLE_CONFIG

pytestmark = [pytest.mark.slow, pytest.mark.pipeline_env]

ROWS = 300


@pytest.fixture(scope="module")
def rows():
    return generate.generate(ROWS, seed=3)


def _config_text(fmt):
    return EXAMPLE_CONFIG.read_text().replace('format = "csv"', f'format = "{fmt}"')


def _config(tmp_path, fmt):
    path = tmp_path / f"features-{fmt}.toml"
    path.write_text(_config_text(fmt))
    return str(path)


def _run(tmp_path, name, fmt, inputs, *extra):
    output = str(tmp_path / name)
    args = ["--config", _config(tmp_path, fmt), "--output", output, *extra]
    for pattern in inputs:
        args += ["--input", pattern]
    return output, pipeline_run.run(args)


def _vocabularies(output):
    return {
        os.path.basename(path): open(path, "rb").read()
        for path in glob.glob(os.path.join(output, "transform_fn", "assets", "*"))
    }


def _canonical(serialized: bytes) -> str:
    """A tf.Example's content, independent of the order its map of features was encoded in."""
    features = tf.train.Example.FromString(serialized).features.feature
    return json.dumps(
        {name: list(getattr(f, f.WhichOneof("kind")).value) for name, f in features.items()},
        sort_keys=True,
    )


def _examples(output, split):
    """The split's transformed tf.Examples, as a sorted list of their contents."""
    files = sorted(glob.glob(os.path.join(output, "data", f"{split}-*.tfrecord.gz")))
    return sorted(
        _canonical(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")
    )


def test_every_format_gives_the_same_measurements(rows, tmp_path):
    # CSV split over two gzip'd files matched by two patterns; the others one file each.
    half = len(rows) // 2
    generate.write_csv(str(tmp_path / "in" / "a.csv.gz"), rows[:half])
    generate.write_csv(str(tmp_path / "in" / "b.csv.gz"), rows[half:])
    generate.write_jsonl(str(tmp_path / "in" / "c.jsonl"), rows)
    generate.write_tfrecord(str(tmp_path / "in" / "c.tfrecord.gz"), rows)
    generate.write_parquet(str(tmp_path / "in" / "c.parquet"), rows)
    inputs = {
        "csv": [str(tmp_path / "in" / "a.csv.gz"), str(tmp_path / "in" / "b*.csv.gz")],
        "jsonl": [str(tmp_path / "in" / "c.jsonl")],
        "tfrecord": [str(tmp_path / "in" / "c.tfrecord.gz")],
        "parquet": [str(tmp_path / "in" / "c.parquet")],
    }
    results = {fmt: _run(tmp_path, f"out-{fmt}", fmt, patterns) for fmt, patterns in inputs.items()}
    csv_output, csv_stats = results["csv"]
    assert csv_stats["rows"] == {
        "read": ROWS,
        "train": csv_stats["rows"]["train"],
        "validation": csv_stats["rows"]["validation"],
        "eval": ROWS - csv_stats["rows"]["train"] - csv_stats["rows"]["validation"],
        "rejected": 0,
    }
    assert csv_stats["rows"]["validation"] > 0  # the example config has a validation split
    for fmt, (output, stats) in results.items():
        assert stats == csv_stats, fmt
        assert _vocabularies(output) == _vocabularies(csv_output), fmt
        assert _examples(output, "train") == _examples(csv_output, "train"), fmt
    assert set(_vocabularies(csv_output)) == {"items", "device", "region"}


def _out_of_vocabulary(output, split, features, size):
    """(ids, ids out of the vocabulary) of `features` in a split's written tf.Examples."""
    ids = out = 0
    for example in _examples(output, split):
        values = json.loads(example)
        for name in features:
            ids += len(values[name])
            out += sum(1 for v in values[name] if not 0 <= v < size)
    return ids, out


def test_stats_count_the_values_no_vocabulary_file_holds_as_out_of_vocabulary(rows, tmp_path):
    """A value holding a line break (JSONL, Parquet or TFRecord can carry one) is never in a
    vocabulary file: however often it is seen, its tokens are OOV in the written examples,
    and stats.json's out-of-vocabulary figures say so."""
    import pyarrow.parquet as pq

    odd = ["line\nbreak", "carriage\rreturn"]
    records = []
    for i, row in enumerate(rows):
        record = dict(zip(generate.HEADER, row, strict=True))
        record["history"] = record["history"].split()
        record["price"] = float(record["price"])
        if i % 3 == 0:
            record["item_id"] = odd[i % 2]
        if i % 4 == 0:
            record["history"].append(odd[i % 8 // 4])
        records.append(record)
    path = tmp_path / "in" / "odd.parquet"
    path.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(records), str(path))
    # top_k cuts the items too (inside a tie: the example's ids are Zipf-like).
    config = tmp_path / "features.toml"
    text = _config_text("parquet")
    config.write_text(
        text.replace("[vocabulary.region]", "[vocabulary.items]\ntop_k = 40\n\n[vocabulary.region]")
        # and no region is frequent enough: an empty vocabulary (tf.Transform's file then
        # holds one placeholder entry that no value maps to)
        .replace("frequency_threshold = 3 ", "frequency_threshold = 100000 ")
    )
    output = str(tmp_path / "out")
    stats = pipeline_run.run(["--config", str(config), "--input", str(path), "--output", output])
    assert stats["rows"]["rejected"] == 0
    items = stats["vocabularies"]["items"]
    assert items["size"] == 40 and items["distinct_values"] > 60
    assert b"break" not in _vocabularies(output)["items"]
    ids, out = _out_of_vocabulary(output, "train", ["item_id", "history"], items["size"])
    assert ids == items["tokens"] and out >= 100
    assert items["oov_rate"] == out / ids
    assert items["coverage"]["32"] < (ids - out) / ids < items["coverage"]["64"]
    ids, out = _out_of_vocabulary(output, "eval", ["item_id", "history"], items["size"])
    assert ids == items["eval_tokens"] and out > 0
    assert items["eval_oov_rate"] == out / ids
    for name in ("item_id", "history"):
        ids, out = _out_of_vocabulary(output, "eval", [name], items["size"])
        assert stats["eval_skew"]["features"][name]["oov_rate"] == out / ids, name
    region = stats["vocabularies"]["region"]
    assert region["size"] == 0 and region["distinct_values"] > 10
    ids, out = _out_of_vocabulary(output, "train", ["region"], region["size"])
    assert ids == region["tokens"] == out and region["oov_rate"] == 1.0
    assert len(_vocabularies(output)["region"].splitlines()) == 1


BAD_LINES = {
    "u1,i1,i2 i3,mobile,r1,9.5,1": None,  # good
    "u2,i1,,mobile,r1,9.5,0": None,  # good: an empty history
    "u3,i1,i2,mobile,r1,9.5": "expected 7 fields, got 6",
    "u4,i1,i2,mobile,r1,9.5,1,extra": "expected 7 fields, got 8",
    "u5,i1,i2,mobile,r1,cheap,1": "price: 'cheap' is not a number",
    "u6,i1,i2,mobile,r1,9.5,maybe": "label clicked: 'maybe' is not a number",
    "u7,,i2,mobile,r1,9.5,1": "missing value for item_id",
    "u8,i1,i2,mobile,r1,,1": "missing value for price",
    ",i1,i2,mobile,r1,9.5,1": "missing value for split key user_id",
    'u9,i1,"i2,mobile,r1,9.5,1': "an odd number of quote characters: a quoted cell spans "
    "lines, and a CSV row must fit on one line",
    'u12,i1,"i2"x,mobile,r1,9.5,1': "malformed CSV: ',' expected after '\"'",
    "u10,i1,i2,mobile,r1,9.5,3": "label clicked: '3' is not 0 or 1",
}


def _write_bad_csv(path, good_rows):
    with open(path, "w") as f:
        f.write(",".join(generate.HEADER) + "\n")
        for row in good_rows:
            f.write(",".join(str(v) for v in row) + "\n")
        for line in BAD_LINES:
            f.write(line + "\n")
        f.write("\n")  # a blank line is a row too
    with open(path, "ab") as f:
        f.write(b"u11,\xff\xfe,i2,mobile,r1,9.5,1\n")


def test_every_bad_row_is_rejected_with_its_reason(rows, tmp_path):
    data = tmp_path / "bad.csv"
    _write_bad_csv(data, rows)
    output, stats = _run(tmp_path, "out", "csv", [str(data)], "--max-rejected-fraction", "0.1")
    expected = [reason for reason in BAD_LINES.values() if reason]
    expected += ["blank line", "not UTF-8 text"]
    counts = stats["rows"]
    assert counts["read"] == ROWS + len(BAD_LINES) + 2
    assert counts["rejected"] == len(expected)
    assert counts["read"] == (
        counts["train"] + counts["validation"] + counts["eval"] + counts["rejected"]
    )
    rejected = [
        json.loads(line)
        for path in glob.glob(os.path.join(output, "rejected", "*"))
        for line in open(path)
    ]
    assert sorted(r["reason"] for r in rejected) == sorted(expected)
    by_reason = {r["reason"]: r for r in rejected}
    assert by_reason["price: 'cheap' is not a number"]["row"] == "u5,i1,i2,mobile,r1,cheap,1"
    assert all(r["file"].endswith("bad.csv") for r in rejected)
    assert sum(stats["rejected_reasons"].values()) == counts["rejected"]
    assert stats["rejected_reasons"]["price: '...' is not a number"] == 1
    assert os.path.exists(os.path.join(output, "_SUCCESS"))


def test_too_many_rejected_rows_fail_the_run_without_success(rows, tmp_path):
    data = tmp_path / "bad.csv"
    _write_bad_csv(data, rows[:50])
    output = str(tmp_path / "out")
    with pytest.raises(pipeline_run.TooManyRejected) as error:
        _run(tmp_path, "out", "csv", [str(data)])
    message = str(error.value)
    assert "more than --max-rejected-fraction 0.01" in message
    assert "expected 7 fields, got 6 (1)" in message or "commonest reasons" in message
    # Nothing is committed; the run's staging prefix keeps the rejected rows, and says where.
    assert not os.path.exists(output)
    (staging,) = glob.glob(output + ".incomplete-*")
    assert f"is in {os.path.join(staging, 'rejected')}" in message
    assert glob.glob(os.path.join(staging, "rejected", "*.jsonl"))
    assert not os.path.exists(os.path.join(staging, "_SUCCESS"))
    with pytest.raises(artifacts.PipelineOutputError, match="no such pipeline output"):
        plan_pipeline_output(output)


def test_a_run_without_a_training_row_says_so_and_keeps_its_report(rows, tmp_path):
    # Every row of one user: the split key sends them all to one held-out split. The
    # training split's figures (lengths, moments) are not defined; the report and stats.json
    # say so instead of failing on them or making them up.
    from pipeline.decode import split_of

    user = next(f"u{i}" for i in range(100) if split_of(f"u{i}", 0.1, 0.1) != "train")
    data = tmp_path / "one-user.csv"
    generate.write_csv(str(data), [(user, *row[1:]) for row in rows[:40]])
    output = str(tmp_path / "out")
    with pytest.raises(pipeline_run.TooManyRejected) as error:
        _run(tmp_path, "out", "csv", [str(data)])
    (staging,) = glob.glob(output + ".incomplete-*")
    assert (
        f"no training row: of 40 rows read, none was rejected (its stats.json and report.html "
        f"are in {staging}); 40 went to the held-out " in str(error.value)
    )
    assert not os.path.exists(output)
    stats = json.loads(open(os.path.join(staging, "stats.json")).read())
    assert stats["rows"]["train"] == 0 and stats["rows"]["read"] == 40
    history = stats["sequences"]["history"]
    assert history["count"] == 0 and history["mean"] is None and history["max"] is None
    assert stats["numeric"]["price"] == {
        "count": 0,
        "mean": None,
        "std": None,
        "min": None,
        "max": None,
        "zeros": 0,
    }
    report = open(os.path.join(staging, "report.html")).read()
    assert "<h3>history</h3><p>No sequences.</p>" in report
    assert "<tr><td>price</td><td>0</td><td>n/a</td>" in report


def test_a_failing_run_commits_nothing(rows, tmp_path, monkeypatch):
    data = tmp_path / "clicks.csv"
    generate.write_csv(str(data), rows)

    def fail(*args, **kwargs):
        raise RuntimeError("injected failure after the Beam pipeline")

    monkeypatch.setattr(pipeline_run, "summarize", fail)
    with pytest.raises(RuntimeError, match="injected failure"):
        _run(tmp_path, "out", "csv", [str(data)])
    assert not os.path.exists(tmp_path / "out")
    assert not glob.glob(str(tmp_path / "out*"))  # no staging directory left behind either


def test_fails_before_beam_on_bad_inputs(rows, tmp_path):
    data = tmp_path / "clicks.csv"
    generate.write_csv(str(data), rows[:5])
    with pytest.raises(InputError, match="matches no file"):
        _run(tmp_path, "out", "csv", [str(tmp_path / "nothing-*.csv")])
    header_only = tmp_path / "empty.csv"
    header_only.write_text(",".join(generate.HEADER) + "\n")
    with pytest.raises(InputError, match="no data rows"):
        _run(tmp_path, "out", "csv", [str(header_only)])
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("user_id,item_id,history\nu1,i1,i2\n")
    with pytest.raises(
        InputError, match=r"wrong\.csv: the header has no column 'region', 'device'"
    ):
        _run(tmp_path, "out", "csv", [str(wrong)])
    (tmp_path / "exists").mkdir()
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        _run(tmp_path, "exists", "csv", [str(data)])


def _output_bytes(output):
    """stats.json's bytes, and each TFRecord file's bytes by its name without the run id
    (`data/train-<run id>-00000-of-00002.tfrecord.gz` -> `train-00000-of-00002.tfrecord.gz`)."""
    manifest = artifacts.read_manifest(output)
    assert not [f for f in manifest.files if f.startswith(f"{artifacts.WORK_DIR}/")]
    assert not os.path.exists(os.path.join(output, artifacts.WORK_DIR))
    files = {}
    for split in artifacts.SPLITS:
        for path in manifest.data_files(split):
            name = os.path.basename(path).replace(f"-{manifest.run_id}", "")
            files[name] = open(path, "rb").read()
    return open(os.path.join(output, "stats.json"), "rb").read(), files


def _table_names(output):
    """The shared names of the hash tables in OUTPUT's transform graph."""
    from tensorflow.core.protobuf import saved_model_pb2

    model = saved_model_pb2.SavedModel()
    with open(os.path.join(output, "transform_fn", "saved_model.pb"), "rb") as f:
        model.ParseFromString(f.read())
    return {
        node.attr["shared_name"].s.decode()
        for graph in model.meta_graphs
        for function in graph.graph_def.library.function
        for node in [*graph.graph_def.node, *function.node_def]
        if node.op == "HashTableV2"
    }


def _content_names(output):
    """The table names the vocabulary files' contents give (pipeline/preprocessing.py)."""
    return {
        f"hash_table_{name}_sha256_{hashlib.sha256(data).hexdigest()[:32]}_-2_-1"
        for name, data in _vocabularies(output).items()
    }


def test_one_and_two_workers_write_the_same_bytes_by_default(tmp_path, capfd):
    # Three files, small batches: several bundles, which two workers share out differently.
    # 3,000 rows: the default gives the train split 2 files (one per 2,000 rows), eval and
    # validation 1 each.
    rows = generate.generate(3000, seed=3)
    for i in range(3):
        generate.write_csv(str(tmp_path / f"clicks-{i}.csv"), rows[i::3])
    inputs = [str(tmp_path / "clicks-*.csv")]
    same = ["--batch-size", "64"]
    one, _ = _run(tmp_path, "one", "csv", inputs, *same, "--direct_num_workers", "1")
    two, _ = _run(
        tmp_path,
        "two",
        "csv",
        inputs,
        *same,
        "--direct_num_workers",
        "2",
        "--direct_running_mode",
        "multi_processing",
    )
    # The worker processes print none of the libraries' lines the command drops.
    printed = capfd.readouterr().err
    for noise in (*console.NATIVE_IMPORT_NOISE, "INFO:tensorflow", "Warning:"):
        assert noise not in printed, printed[-2000:]
    stats_one, files_one = _output_bytes(one)
    stats_two, files_two = _output_bytes(two)
    assert stats_two == stats_one
    assert sorted(files_two) == sorted(files_one)
    assert files_two == files_one
    assert sorted(files_one) == [
        "eval-00000-of-00001.tfrecord.gz",
        *(f"train-{i:05d}-of-00002.tfrecord.gz" for i in range(2)),
        "validation-00000-of-00001.tfrecord.gz",
    ]
    assert all(len(data) > artifacts.EMPTY_SHARD_BYTES for data in files_one.values())
    assert _vocabularies(one) == _vocabularies(two)
    rerun, _ = _run(tmp_path, "one", "csv", inputs, *same, "--overwrite")
    assert _output_bytes(rerun) == (stats_one, files_one)
    assert _vocabularies(rerun) == _vocabularies(one)
    # The transform graph names its tables after the vocabularies' contents, not after the
    # run's temporary files: no run id, no staging path in it.
    for output in (one, two, rerun):
        graph = open(os.path.join(output, "transform_fn", "saved_model.pb"), "rb").read()
        assert b".incomplete-" not in graph and b"tftransform_tmp" not in graph
        assert _table_names(output) == _content_names(one)
    shutil.rmtree(two)


def test_rows_lost_between_the_two_passes_commit_nothing(rows, tmp_path, monkeypatch):
    # The transforming pass reads the rows the measuring pass kept on disk; one batch of them
    # lost (a kept file damaged or deleted while the run ran) must fail the run, not write
    # fewer examples than stats.json counts.
    data = tmp_path / "clicks.csv"
    generate.write_csv(str(data), rows)
    real_read = spill.read_spilled
    reads = []

    def read_spilled(path, batch_size):
        batches = list(real_read(path, batch_size))
        reads.append(path)
        yield from batches[1:] if len(reads) == 1 else batches

    monkeypatch.setattr(spill, "read_spilled", read_spilled)
    with pytest.raises(InputError) as error:
        _run(tmp_path, "out", "csv", [str(data)])
    message = str(error.value)
    assert message.startswith("the transforming pass wrote other numbers of examples than ")
    assert "examples written" in message and "nothing was committed" in message
    assert not glob.glob(str(tmp_path / "out*"))  # nothing committed, no staging left


def test_a_transform_that_disagrees_with_the_transform_graph_commits_nothing(
    rows, tmp_path, monkeypatch
):
    # The transforming pass maps ids column-wise, not through the transform graph; each
    # worker checks its first batch against the graph, and a difference fails the run.
    data = tmp_path / "clicks.csv"
    generate.write_csv(str(data), rows)
    real_transform = transform.transform

    def off_by_one(batch, *args):
        out = real_transform(batch, *args)
        ids = out.column("region")
        shifted = pa.LargeListArray.from_arrays(ids.offsets, pc.add(ids.values, 1))
        return out.set_column(out.schema.get_field_index("region"), "region", shifted)

    monkeypatch.setattr(transform, "transform", off_by_one)
    with pytest.raises(Exception, match="feature 'region': the transforming pass and the "):
        _run(tmp_path, "out", "csv", [str(data)])
    assert not glob.glob(str(tmp_path / "out*"))  # nothing committed, no staging left


def test_gzip_input_lines_are_read(tmp_path, rows):
    # A .gz file is decompressed by its extension; the same rows give the same counts.
    plain, gz = tmp_path / "c.csv", tmp_path / "c.csv.gz"
    generate.write_csv(str(plain), rows[:20])
    with open(plain, "rb") as src, gzip.open(gz, "wb") as dst:
        dst.write(src.read())
    _, stats = _run(tmp_path, "gz", "csv", [str(gz)])
    assert stats["rows"]["read"] == 20


def _rows_written(output):
    """Rows in the written train, validation and eval TFRecords and in rejected/."""
    examples = sum(
        1
        for split in ("train", "validation", "eval")
        for path in glob.glob(os.path.join(output, "data", f"{split}-*.tfrecord.gz"))
        for _ in tf.data.TFRecordDataset(path, compression_type="GZIP")
    )
    rejected = sum(
        1 for path in glob.glob(os.path.join(output, "rejected", "*")) for _ in open(path)
    )
    return examples + rejected


def test_a_run_over_300_files_counts_every_row_once(rows, tmp_path):
    # One row a file, every tenth file gzip'd (read whole) and one with a bad row; a second
    # pattern matches a file the first already matched: it is read once.
    directory = tmp_path / "in"
    for i, row in enumerate(rows):
        generate.write_csv(
            str(directory / f"part-{i:05d}.csv{'.gz' if i % 10 == 0 else ''}"), [row]
        )
    with open(directory / "part-00007.csv", "a") as f:
        f.write("u-bad,i1,i2,mobile,r1,cheap,1\n")
    # The same files again, spelled otherwise: a second slash, and a link to one of them.
    (tmp_path / "link.csv").symlink_to(directory / "part-00003.csv")
    patterns = [
        str(directory / "part-*"),
        str(directory / "part-00007.csv"),
        str(directory) + "//part-00005.csv",
        str(tmp_path / "link.csv"),
    ]
    output, stats = _run(tmp_path, "out", "csv", patterns, "--num-shards", "3")
    counts = stats["rows"]
    assert counts["read"] == ROWS + 1
    assert counts["rejected"] == 1
    assert counts["read"] == (
        counts["train"] + counts["validation"] + counts["eval"] + counts["rejected"]
    )
    assert _rows_written(output) == counts["read"]
    run_id = artifacts.read_manifest(output).run_id
    for split in ("train", "validation", "eval"):
        shards = sorted(os.listdir(os.path.join(output, "data")))
        assert [s for s in shards if s.startswith(split)] == [
            f"{split}-{run_id}-{i:05d}-of-00003.tfrecord.gz" for i in range(3)
        ]


def test_a_csv_file_with_another_header_fails_the_run_naming_it(rows, tmp_path):
    # The launcher reads the first file only; the reader checks every file's header.
    generate.write_csv(str(tmp_path / "a.csv"), rows[:20])
    with open(tmp_path / "b.csv", "w") as f:
        f.write("item_id,user_id,history,device,region,price,clicked\n")
        f.write("i1,u1,i2,mobile,r1,9.5,1\n")
    with pytest.raises(InputError, match=r"b\.csv: its header differs from .*a\.csv's") as error:
        _run(tmp_path, "out", "csv", [str(tmp_path / "*.csv")])
    assert not os.path.exists(tmp_path / "out")
    assert "every input file must have the same columns" in str(error.value)


def test_a_full_disk_is_one_line_naming_the_output_and_commits_nothing(
    rows, tmp_path, monkeypatch, caplog
):
    import errno

    from pipeline import sinks

    data = tmp_path / "clicks.csv"
    generate.write_csv(str(data), rows)

    def full_disk(path, pairs):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(sinks, "write_run", full_disk)
    output = str(tmp_path / "out")
    argv = ["--config", _config(tmp_path, "csv"), "--input", str(data), "--output", output]
    assert pipeline_run.main(argv) == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == [errors[-1].getMessage()]
    assert f"--output {output}: no space left on the device" in errors[-1].getMessage()
    assert not [r for r in caplog.records if r.exc_info]  # no traceback logged
    assert not glob.glob(output + "*")  # neither OUTPUT nor its staging prefix


def test_a_failure_after_tensorflow_loaded_ends_with_our_line_on_stderr(rows, tmp_path):
    # TensorFlow's function objects, collected at interpreter exit, printed 13
    # `Exception ignored in: AtomicFunction.__del__` tracebacks after the product's line.
    import subprocess
    import sys

    generate.write_csv(str(tmp_path / "a.csv"), rows[:20])
    with open(tmp_path / "b.csv", "w") as f:
        f.write("item_id,user_id,history,device,region,price,clicked\ni1,u1,i2,mobile,r1,9.5,1\n")
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "--config", str(EXAMPLE_CONFIG)]
        + ["--input", str(tmp_path / "*.csv"), "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 2
    assert "Exception ignored" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "pipeline: " in last and "b.csv: its header differs" in last


def test_the_manifest_of_a_real_run_records_each_files_crc32c(rows, tmp_path):
    from common import storage

    data = str(tmp_path / "rows.csv")
    generate.write_csv(data, rows)
    output, _ = _run(tmp_path, "out", "csv", [data], "--num-shards", "3")
    manifest = artifacts.require_complete(output)
    assert len(manifest.data["train"]) == 3
    assert set(manifest.crc32c) == set(manifest.files)
    for relative, checksum in manifest.crc32c.items():
        assert storage.crc32c(os.path.join(output, relative)) == checksum, relative


def test_a_stop_whose_interrupt_was_swallowed_commits_nothing(rows, tmp_path, monkeypatch):
    # A SIGTERM whose KeyboardInterrupt landed in a finalizer (Python ignores it there) is
    # still remembered; the run stops at its next block and commits nothing.
    from common import process

    data = tmp_path / "clicks.csv"
    generate.write_csv(str(data), rows)
    monkeypatch.setattr(process, "_stop", [signal.SIGTERM])
    with pytest.raises(BaseException) as stopped:
        _run(tmp_path, "out", "csv", [str(data)])
    assert process.is_interrupt(stopped.value)
    assert not glob.glob(str(tmp_path / "out*"))  # nothing committed, no staging left


TWO_WORKERS = ("--direct_num_workers", "2", "--direct_running_mode", "multi_processing")


@pytest.mark.parametrize(
    "signum, workers",
    [(signal.SIGTERM, ()), (signal.SIGINT, ()), (signal.SIGTERM, TWO_WORKERS)],
)
def test_a_run_stopped_by_a_signal_says_so_in_one_line_and_leaves_nothing(
    tmp_path, signum, workers
):
    # SIGTERM is what `timeout`, schedulers and Kubernetes send: it stops a run as Ctrl-C
    # does, staging deleted, one line, exit code 130. With worker processes, the signal goes
    # to the whole process group, as a terminal's Ctrl-C and `kill -- -PGID` send it.
    data = tmp_path / "clicks.csv"
    generate.write_csv(str(data), generate.generate(60_000, seed=5))
    output = tmp_path / "out"
    command = [sys.executable, "-m", "pipeline", "--config", str(EXAMPLE_CONFIG)]
    command += ["--input", str(data), "--output", str(output), *workers]
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while not glob.glob(str(tmp_path / "out.incomplete-*" / ".work" / "spill")):  # Beam runs
        assert process.poll() is None and time.monotonic() < deadline, "the run never began"
        time.sleep(0.05)
    os.killpg(process.pid, signum)
    _, stderr = process.communicate(timeout=120)
    said = stderr.decode()
    assert process.returncode == 130, said
    assert said.strip().splitlines()[-1] == "pipeline: interrupted: stopped before the end"
    assert "Traceback" not in said, said
    for line in said.strip().splitlines():  # the product's own lines only
        assert line.startswith("pipeline: "), said
    assert sorted(os.listdir(tmp_path)) == ["clicks.csv"]
