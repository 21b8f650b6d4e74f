"""The commit protocol (pipeline/commit.py) and the readers of its manifest, on gs:// (a real
Cloud Storage API server, the emulator) and on the local disk.

TensorFlow cannot write to the emulator, so the fast tests stage the files a run writes
through the same I/O layer and commit them with the real protocol; the slow test at the end
runs the real pipeline locally.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal

import pytest
from apache_beam.io.filesystems import FileSystems

from common import artifacts, process, storage
from embedding.planner import load_or_make_plan, plan_pipeline_output
from pipeline import commit
from pipeline.input_files import InputError

pytestmark = pytest.mark.pipeline_env


def _stage(run: commit.Run, train_shards: int, tag: str, validation_shards: int = 0) -> None:
    """Writes what a pipeline run writes into its staging prefix (`tag` marks its bytes)."""
    files = {
        "transform_fn/saved_model.pb": f"graph {tag}",
        "transform_fn/assets/items": "i1\ni2\n",
        "stats.json": json.dumps({"tag": tag}),
        "config.json": "{}",
        "report.html": "<html></html>",
        "rejected/rejected-00000-of-00001.jsonl": "",
        "data/eval-00000-of-00001.tfrecord.gz": f"eval {tag}",
        ".work/measurements.json": "{}",
        ".work/tft/cache": "x",
    }
    for i in range(train_shards):
        files[f"data/train-{i:05d}-of-{train_shards:05d}.tfrecord.gz"] = f"train {i} {tag}"
    for i in range(validation_shards):
        files[f"data/validation-{i:05d}-of-{validation_shards:05d}.tfrecord.gz"] = f"v {i}"
    for relative, text in files.items():
        storage.write_text(storage.join(run.staging, *relative.split("/")), text)


def _commit_run(output: str, train_shards: int, tag: str, overwrite: bool = False):
    run = commit.begin(output, overwrite)
    _stage(run, train_shards, tag)
    return run, commit.commit(run, overwrite)


def _everything(root: str) -> dict[str, int]:
    return storage.list_files(root)


def _output(root: str) -> str:
    return storage.join(root, "out")


def test_a_commit_lists_every_file_and_writes_the_manifest_last(any_root, monkeypatch):
    output = _output(any_root)
    written_before_manifest = {}
    write_text = storage.write_text

    def spy(path, text):
        if path.endswith(artifacts.SUCCESS):
            written_before_manifest.update(storage.list_files(output))
        return write_text(path, text)

    monkeypatch.setattr(storage, "write_text", spy)
    run, manifest = _commit_run(output, train_shards=3, tag="first")

    on_disk = json.loads(storage.read_text(storage.join(output, artifacts.SUCCESS)))
    assert on_disk["run_id"] == run.run_id == manifest.run_id
    assert on_disk["files"] == written_before_manifest  # every file there before _SUCCESS
    assert set(on_disk["files"]) == set(_everything(output)) - {artifacts.SUCCESS}
    assert on_disk["files"]["stats.json"] == len(json.dumps({"tag": "first"}))
    assert not any(name.startswith(".work") for name in on_disk["files"])
    assert on_disk["data"]["train"] == [
        f"data/train-{run.run_id}-{i:05d}-of-00003.tfrecord.gz" for i in range(3)
    ]
    assert on_disk["data"]["eval"] == [f"data/eval-{run.run_id}-00000-of-00001.tfrecord.gz"]
    assert artifacts.require_complete(output).run_id == run.run_id
    assert artifacts.data_files(output, "train") == [
        storage.join(output, relative) for relative in on_disk["data"]["train"]
    ]
    leftovers = [p for p in _everything(any_root) if ".incomplete-" in p or ".work" in p]
    assert leftovers == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_inside_the_commit_waits_for_its_end(tmp_path, monkeypatch, caplog, signum):
    # Stopped inside the window, the old OUTPUT would be deleted and the new one not moved in.
    # SIGTERM stops a command as Ctrl-C does (common.process.run_main): the same here.
    previous = signal.signal(signal.SIGTERM, process._interrupt)
    output = _output(str(tmp_path))
    _commit_run(output, train_shards=2, tag="old")
    move_tree = storage.move_tree

    def move_after_a_stop(*args, **kwargs):
        os.kill(os.getpid(), signum)  # delivered here, in the middle of the window
        return move_tree(*args, **kwargs)

    monkeypatch.setattr(storage, "move_tree", move_after_a_stop)
    caplog.set_level(logging.WARNING, logger="pipeline")
    try:
        before = signal.getsignal(signum)
        run, _ = _commit_run(output, train_shards=3, tag="new", overwrite=True)
        assert signal.getsignal(signum) is before  # the handler before the commit is back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert artifacts.require_complete(output).run_id == run.run_id
    assert "Asked to stop while committing: stopping once the commit is done" in caplog.text


def test_an_existing_output_is_refused_before_anything_runs(any_root):
    output = _output(any_root)
    storage.write_text(storage.join(output, "data", "train-0.tfrecord.gz"), "old")
    # A run's statistics (an output whose commit failed has no manifest to go by).
    rows = {"rows": {"read": 1, "train": 1, "eval": 0, "rejected": 0}}
    storage.write_text(storage.join(output, "stats.json"), json.dumps(rows))
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        commit.begin(output, overwrite=False)
    commit.begin(storage.join(any_root, "ou"), overwrite=False)  # a prefix of it: not it
    assert commit.begin(output, overwrite=True).staging.startswith(output + ".incomplete-")


def test_staging_folders_that_killed_runs_left_are_named(any_root, caplog):
    output = _output(any_root)
    killed = [output + ".incomplete-20260101T000000Z-0badf00d", output + ".incomplete-x"]
    for staging in killed:
        storage.write_text(storage.join(staging, ".work", "spill", "train", "a.arrow"), "x")
    storage.write_text(storage.join(any_root, "other.incomplete-y", "stats.json"), "{}")
    # Kept on purpose for its rejected rows (no work directory left), and a plain file.
    storage.write_text(storage.join(output + ".incomplete-kept", "rejected", "r.jsonl"), "{}")
    storage.write_text(output + ".incomplete-file", "x")
    caplog.set_level(logging.WARNING, logger="pipeline")
    commit.begin(output, overwrite=False)
    assert commit.left_behind(output) == sorted(killed)
    assert "2 staging folder(s) of earlier runs lie beside it" in caplog.text
    assert "incomplete-kept" not in caplog.text and "incomplete-file" not in caplog.text
    assert all(staging in caplog.text for staging in killed)
    caplog.clear()
    commit.begin(storage.join(any_root, "fresh"), overwrite=False)
    assert "staging folder" not in caplog.text


def test_an_output_that_appears_during_the_run_is_not_replaced(any_root):
    output = _output(any_root)
    run = commit.begin(output, overwrite=False)
    _stage(run, 1, "new")
    storage.write_text(storage.join(output, "someone-elses.txt"), "keep me")
    with pytest.raises(InputError, match="appeared while the pipeline ran"):
        commit.commit(run, overwrite=False)
    assert _everything(output) == {"someone-elses.txt": 7}


def test_bucket_roots_and_glob_characters_are_refused(gcs_bucket, tmp_path):
    with pytest.raises(InputError, match="give a folder inside the bucket"):
        commit.begin(gcs_bucket, overwrite=True)
    with pytest.raises(InputError, match=r"without \*, \? or \["):
        commit.begin(str(tmp_path / "out*"), overwrite=True)


def _fail_after_invalidating(monkeypatch, output):
    delete_files = storage.delete_files
    success = storage.join(output, artifacts.SUCCESS)

    def failing(paths):
        paths = list(paths)
        if any(p.startswith(storage.join(output, "")) and p != success for p in paths):
            delete_files(paths[:2])
            raise OSError("injected: the connection dropped while deleting the old output")
        return delete_files(paths)

    monkeypatch.setattr(storage, "delete_files", failing)


def _fail_during_the_copy(monkeypatch, output):
    rename = FileSystems.rename

    def failing(sources, destinations):
        # Moves the first two files for real, then fails, as a dropped connection would.
        rename(sources[:2], destinations[:2])
        raise OSError("injected: the connection dropped while moving files")

    monkeypatch.setattr(FileSystems, "rename", failing)


@pytest.mark.parametrize("failure", [_fail_after_invalidating, _fail_during_the_copy])
@pytest.mark.trainer_env  # the trainer is one of the readers
def test_a_rerun_that_fails_in_the_commit_leaves_nothing_a_reader_accepts(
    any_root, monkeypatch, failure, tmp_path
):
    output = _output(any_root)
    _commit_run(output, train_shards=3, tag="first")
    run = commit.begin(output, overwrite=True)
    _stage(run, 1, "second")
    failure(monkeypatch, output)
    with pytest.raises(commit.CommitError, match="holds no commit now: rerun the pipeline"):
        commit.commit(run, overwrite=True)
    monkeypatch.undo()
    commit.abandon(run)

    # Locally the old OUTPUT may be gone entirely; on gs:// some files were moved into it.
    refused = "no _SUCCESS marker|no such pipeline output"
    for read in (artifacts.require_complete, load_or_make_plan, plan_pipeline_output):
        with pytest.raises(artifacts.PipelineOutputError, match=refused):
            read(output)
    with pytest.raises(artifacts.PipelineOutputError, match=refused):
        artifacts.data_files(output, "train")
    from trainer import task

    args = ["--pipeline-output", output, "--model-dir", str(tmp_path / "m")]
    assert task.main([*args, "--train-steps", "1"]) == 2
    assert not (tmp_path / "m").exists()
    assert [p for p in _everything(any_root) if ".incomplete-" in p] == []


def test_a_failure_before_the_commit_leaves_the_old_output_committed(any_root):
    output = _output(any_root)
    first, _ = _commit_run(output, train_shards=2, tag="first")
    before = _everything(output)
    run = commit.begin(output, overwrite=True)
    _stage(run, 1, "second")
    commit.abandon(run)  # what run() does when anything fails before the commit
    assert _everything(output) == before
    assert artifacts.require_complete(output).run_id == first.run_id
    assert [p for p in _everything(any_root) if ".incomplete-" in p] == []


def test_a_rerun_with_fewer_shards_is_read_with_exactly_its_own(any_root):
    output = _output(any_root)
    first, _ = _commit_run(output, train_shards=3, tag="first")
    storage.write_text(storage.join(output, artifacts.PLAN), "{}")  # the first run's plan
    second, _ = _commit_run(output, train_shards=1, tag="second", overwrite=True)

    (shard,) = artifacts.data_files(output, "train")
    assert storage.read_text(shard) == "train 0 second"
    assert second.run_id in shard
    data = [p for p in _everything(output) if p.startswith("data/")]
    assert data == [
        f"data/eval-{second.run_id}-00000-of-00001.tfrecord.gz",
        f"data/train-{second.run_id}-00000-of-00001.tfrecord.gz",
    ]
    assert not storage.exists(storage.join(output, artifacts.PLAN))
    assert artifacts.read_json(output, artifacts.STATS) == {"tag": "second"}
    leftovers = [p for p in _everything(any_root) if ".incomplete-" in p or ".work" in p]
    assert leftovers == []


def test_the_manifest_is_checked_against_what_is_there(any_root):
    output = _output(any_root)
    with pytest.raises(artifacts.PipelineOutputError, match="no such pipeline output"):
        artifacts.require_complete(output)
    run, manifest = _commit_run(output, train_shards=2, tag="first")
    success = storage.join(output, artifacts.SUCCESS)
    good = storage.read_text(success)

    storage.write_text(success, "")
    with pytest.raises(artifacts.PipelineOutputError, match="older version of the pipeline"):
        artifacts.require_complete(output)
    storage.write_text(success, "{not json")
    with pytest.raises(artifacts.PipelineOutputError, match="_SUCCESS: not a commit manifest"):
        artifacts.require_complete(output)

    storage.write_text(success, good)
    shard = manifest.data["train"][1]
    storage.write_text(storage.join(output, shard), "changed")
    with pytest.raises(artifacts.PipelineOutputError, match=f"missing or changed.*{shard}"):
        artifacts.require_complete(output)
    storage.delete_files([storage.join(output, shard)])
    with pytest.raises(artifacts.PipelineOutputError, match=f"{run.run_id}.*first: {shard}"):
        artifacts.data_files(output, "train")


def test_a_run_with_too_many_rejected_rows_keeps_only_what_explains_it(any_root):
    run = commit.begin(_output(any_root), overwrite=False)
    _stage(run, 2, "rejected")
    assert commit.keep_for_inspection(run) == run.staging
    assert sorted(_everything(run.staging)) == [
        "rejected/rejected-00000-of-00001.jsonl",
        "report.html",
        "stats.json",
    ]
    if not storage.is_remote(run.staging):
        assert sorted(os.listdir(run.staging)) == ["rejected", "report.html", "stats.json"]


@pytest.mark.slow
def test_a_failed_overwrite_leaves_the_real_output_committed_and_readable(
    small_pipeline_output, tmp_path
):
    import tensorflow as tf

    from examples.clicks import generate
    from pipeline import run as pipeline_run
    from tests.conftest import EXAMPLE_CONFIG
    from tests.test_pipeline import _write_bad_csv

    output = str(tmp_path / "out")
    shutil.copytree(small_pipeline_output["output"], output)  # relative paths: still valid
    before = artifacts.require_complete(output)
    files_before = artifacts.data_files(output, "train")
    bad = tmp_path / "bad.csv"
    _write_bad_csv(bad, generate.generate(50, seed=5))

    with pytest.raises(pipeline_run.TooManyRejected) as error:
        pipeline_run.run(
            ["--config", str(EXAMPLE_CONFIG), "--input", str(bad), "--output", output]
            + ["--overwrite"]
        )
    (staging,) = [str(p) for p in tmp_path.glob("out.incomplete-*")]
    assert f"is in {os.path.join(staging, 'rejected')}" in str(error.value)
    assert f"{output} is as it was" in str(error.value)
    assert sorted(os.listdir(staging)) == ["rejected", "report.html", "stats.json"]
    assert any(open(p).read() for p in (tmp_path / staging / "rejected").glob("*.jsonl"))

    after = artifacts.require_complete(output)
    assert after == before
    assert artifacts.data_files(output, "train") == files_before
    assert load_or_make_plan(output) == small_pipeline_output["plan"]
    records = tf.data.TFRecordDataset(files_before, compression_type="GZIP")
    assert sum(1 for _ in records) == small_pipeline_output["stats"]["rows"]["train"]


def test_the_validation_split_is_committed_and_read_like_the_others(tmp_path):
    output = str(tmp_path / "out")
    run = commit.begin(output, overwrite=False)
    _stage(run, train_shards=2, tag="first", validation_shards=2)
    manifest = commit.commit(run, overwrite=False)
    validation = artifacts.data_files(output, "validation")
    assert [os.path.basename(f) for f in validation] == [
        f"validation-{run.run_id}-0000{i}-of-00002.tfrecord.gz" for i in range(2)
    ]
    assert validation == manifest.data_files("validation")
    assert not set(validation) & set(manifest.data_files("train") + manifest.data_files("eval"))
    # A manifest written before the split existed lists none: read as an empty split.
    success = storage.join(output, artifacts.SUCCESS)
    old = json.loads(storage.read_text(success))
    old["data"].pop("validation")
    for shard in manifest.data["validation"]:
        old["files"].pop(shard)
        old["crc32c"].pop(shard)
        storage.delete_files([storage.join(output, shard)])
    storage.write_text(success, json.dumps(old))
    assert artifacts.data_files(output, "validation") == []
    assert len(artifacts.data_files(output, "train")) == 2
    old["data"]["test"] = []
    storage.write_text(success, json.dumps(old))
    with pytest.raises(artifacts.PipelineOutputError, match="train, validation, eval"):
        artifacts.data_files(output, "train")


def test_overwrite_replaces_only_a_pipeline_output_and_never_its_inputs(tmp_path):
    # --overwrite once deleted whatever directory it was given, the run's own input included.
    precious = tmp_path / "danger"
    (precious / "thesis").mkdir(parents=True)
    (precious / "thesis" / "chapter1.txt").write_text("years of work")
    data = precious / "clicks.csv"
    data.write_text("user_id,item_id\n")
    with pytest.raises(InputError, match=r"holds files a pipeline run does not write"):
        commit.begin(str(precious), overwrite=True, inputs=[str(data)])
    assert (precious / "thesis" / "chapter1.txt").read_text() == "years of work"
    # A pipeline output whose own shards are the input (TFRecords read back): refused too.
    output = tmp_path / "out"
    (output / "data").mkdir(parents=True)
    (output / "stats.json").write_text(
        '{"rows": {"read": 1, "train": 1, "eval": 0, "rejected": 0}}'
    )
    inside = output / "data" / "train-r-00000-of-00001.tfrecord.gz"
    inside.write_text("x\n")
    with pytest.raises(InputError, match=r"holds the input .*train-r-00000"):
        commit.begin(str(output), overwrite=True, inputs=[str(inside)])
    # Top-level names a run writes, but a user's file under data/, and no pipeline marker.
    workspace = tmp_path / "ws"
    (workspace / "data").mkdir(parents=True)
    (workspace / "metadata").mkdir()
    (workspace / "data" / "precious.csv").write_text("mine")
    with pytest.raises(InputError, match=r"first: data/precious\.csv"):
        commit.begin(str(workspace), overwrite=True, inputs=[])
    os.remove(workspace / "data" / "precious.csv")
    (workspace / "data" / "train-x-00000-of-00001.tfrecord.gz").write_text("")
    with pytest.raises(InputError, match="not a pipeline output"):
        commit.begin(str(workspace), overwrite=True, inputs=[])
    assert (workspace / "data" / "train-x-00000-of-00001.tfrecord.gz").exists()
    with pytest.raises(InputError, match="--output is empty"):
        commit.begin("", overwrite=True, inputs=[])
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    with pytest.raises(InputError, match="is a file, not a folder"):
        commit.begin(str(a_file), overwrite=True, inputs=[])


def test_output_is_resolved_so_staging_lies_beside_it(tmp_path, monkeypatch):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    run = commit.begin(str(link), overwrite=True, inputs=[])
    assert run.output == str(real)
    assert run.staging.startswith(str(real) + commit.STAGING_MARK)
    monkeypatch.chdir(real)
    assert commit.begin(".", overwrite=True, inputs=[]).output == str(real)


def test_an_output_that_cannot_be_written_is_refused_before_beam(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot write beside it"):
        commit.begin(str(blocker / "out"), overwrite=False, inputs=[])


def test_overwrite_deletes_no_file_it_did_not_write(any_root):
    # A folder that only looks like a pipeline output lost all four files, a README the
    # pipeline never writes among them.
    workspace = storage.join(any_root, "ws")
    mine = {
        "config.json": "{}",
        "data/train-00000-of-00001.tfrecord.gz": "x",
        "metadata/README.txt": "my notes",
        "transform_fn/saved_model.pb": "y",
    }
    for relative, text in mine.items():
        storage.write_text(storage.join(workspace, *relative.split("/")), text)
    with pytest.raises(InputError, match=r"first: metadata/README\.txt\)"):
        commit.begin(workspace, overwrite=True)
    assert storage.list_files(workspace) == {k: len(v) for k, v in mine.items()}

    # A committed output: exactly what its manifest lists (and the planner's plan) is ours.
    output = _output(any_root)
    _commit_run(output, train_shards=2, tag="first")
    storage.write_text(storage.join(output, artifacts.PLAN), "{}")
    notes = storage.join(output, "transform_fn", "assets", "notes.txt")
    storage.write_text(notes, "mine")
    with pytest.raises(InputError, match=r"first: transform_fn/assets/notes\.txt\)"):
        commit.begin(output, overwrite=True)
    storage.delete_files([notes])
    run, manifest = _commit_run(output, train_shards=1, tag="second", overwrite=True)
    assert set(storage.list_files(output)) == set(manifest.files) | {artifacts.SUCCESS}

    # A file that appears while the run runs is not deleted by the commit either.
    run = commit.begin(output, overwrite=True)
    _stage(run, 1, "third")
    late = storage.join(output, "late.txt")
    storage.write_text(late, "mine")
    with pytest.raises(InputError, match=r"first: late\.txt"):
        commit.commit(run, overwrite=True)
    assert storage.read_text(late) == "mine"


def test_the_manifest_records_each_files_crc32c_and_loads_refuse_a_same_size_edit(any_root):
    # Two vocabulary lines swapped, or stats.json's "eval": 411 edited to 0 (same size once
    # padded), passed the size check and trained a model whose serving scores differed.
    import base64

    import google_crc32c

    output = _output(any_root)
    run, manifest = _commit_run(output, train_shards=2, tag="first")
    on_disk = json.loads(storage.read_text(storage.join(output, artifacts.SUCCESS)))
    assert on_disk["manifest_version"] == 2
    assert set(on_disk["crc32c"]) == set(on_disk["files"])
    for relative, checksum in on_disk["crc32c"].items():
        data = storage.read_bytes(storage.join(output, *relative.split("/")))
        expected = base64.b64encode(google_crc32c.Checksum(data).digest()).decode()
        assert checksum == expected, relative
    artifacts.require_complete(output)

    for relative, edit in [
        ("transform_fn/assets/items", lambda text: "i2\ni1\n"),
        ("stats.json", lambda text: text.replace("first", "fir5t")),
        ("config.json", lambda text: "[]"),
        ("transform_fn/saved_model.pb", lambda text: text.upper()),
    ]:
        path = storage.join(output, *relative.split("/"))
        before = storage.read_text(path)
        after = edit(before)
        assert len(after) == len(before) and after != before
        storage.write_text(path, after)
        with pytest.raises(artifacts.PipelineOutputError) as error:
            artifacts.require_complete(output)
        message = str(error.value)
        assert message.startswith(f"{path}: its content changed since run {run.run_id}")
        assert "\n" not in message
        storage.write_text(path, before)
    artifacts.require_complete(output)


def test_a_damaged_shard_is_named_by_its_checksum(any_root):
    output = _output(any_root)
    _commit_run(output, train_shards=2, tag="first")
    assert artifacts.describe_damage(output) is None
    manifest = artifacts.require_complete(output)
    shard = manifest.data_files("train")[1]
    data = bytearray(storage.read_bytes(shard))
    data[3] ^= 0x01
    storage.write_bytes(shard, bytes(data))
    artifacts.require_complete(output)  # same size, and shards are not read on every load
    assert artifacts.describe_damage(output).startswith(f"{shard}: the data shard is damaged")


def test_a_manifest_from_before_checksums_is_read_by_size_with_a_warning(any_root, caplog):
    output = _output(any_root)
    _commit_run(output, train_shards=1, tag="first")
    success = storage.join(output, artifacts.SUCCESS)
    old = json.loads(storage.read_text(success))
    old["manifest_version"] = 1
    del old["crc32c"]
    storage.write_text(success, json.dumps(old))
    stats = storage.join(output, "stats.json")
    storage.write_text(stats, storage.read_text(stats).replace("first", "fir5t"))
    assert artifacts.require_complete(output).crc32c == {}
    assert "records no checksums: its files are checked by size only" in caplog.text
    old["manifest_version"] = 2
    storage.write_text(success, json.dumps(old))
    with pytest.raises(artifacts.PipelineOutputError, match="crc32c must map each of the files"):
        artifacts.require_complete(output)


@pytest.mark.slow
@pytest.mark.trainer_env  # it runs the trainer
def test_the_trainer_names_the_damaged_shard(small_pipeline_output, tmp_path, caplog):
    # A damaged record once named only the OUTPUT: "a file of OUTPUT is damaged".
    from trainer import task

    output = str(tmp_path / "out")
    shutil.copytree(small_pipeline_output["output"], output)
    manifest = artifacts.require_complete(output)
    (shard,) = manifest.data_files("train")
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2] ^= 0x40
    open(shard, "wb").write(bytes(data))
    args = ["--pipeline-output", output, "--model-dir", str(tmp_path / "m")]
    assert task.main([*args, "--train-steps", "2"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors[-1].startswith(f"{shard}: the data shard is damaged")


def test_random_hand_edits_of_the_statistics_are_refused_in_one_line(tmp_path):
    """A property: any edit of stats.json after the commit (a count, a histogram bucket, a
    byte) is refused by every reader (`require_complete`, which the planner and the trainer
    call first), in one line naming the file; a plan is made only from what the run
    measured."""
    import random

    output = _output(str(tmp_path))
    _commit_run(output, train_shards=1, tag="first")
    path = storage.join(output, artifacts.STATS)
    stats = {
        "rows": {"read": 1000, "train": 800, "validation": 0, "eval": 150, "rejected": 50},
        "sequences": {"history": {"histogram": {"0": 10, "5": 700, "40": 90}, "max": 40}},
    }
    original = json.dumps(stats)
    # Commit a realistic stats.json by committing a run that wrote it.
    run = commit.begin(output, True)
    _stage(run, 1, "second")
    storage.write_text(storage.join(run.staging, artifacts.STATS), original)
    commit.commit(run, True)
    artifacts.require_complete(output)
    rng = random.Random(11)
    for _ in range(60):
        text = list(original)
        kind = rng.choice(["digit", "swap", "drop"])
        if kind == "digit":
            positions = [i for i, c in enumerate(text) if c.isdigit()]
            i = rng.choice(positions)
            text[i] = str((int(text[i]) + rng.randrange(1, 10)) % 10)
        elif kind == "swap":
            i = rng.randrange(len(text) - 1)
            if text[i] == text[i + 1]:
                continue
            text[i], text[i + 1] = text[i + 1], text[i]
        else:
            del text[rng.randrange(len(text))]
        storage.write_text(path, "".join(text))
        with pytest.raises(artifacts.PipelineOutputError) as error:
            artifacts.require_complete(output)
        message = str(error.value)
        assert artifacts.STATS in message and "changed since run" in message
        assert "\n" not in message
    storage.write_text(path, original)
    artifacts.require_complete(output)


def test_overwrite_refuses_a_users_files_that_only_bear_our_names(tmp_path):
    """A folder of the user's holding config.json, stats.json, report.html and an asset:
    every name is one a run writes, but no manifest or content says a run wrote them."""
    output = str(tmp_path / "mine")
    files = {
        "config.json": '{"my": "settings"}',
        "stats.json": '{"mine": 1}',
        "report.html": "<p>my report</p>",
        "transform_fn/assets/notes": "my notes",
    }
    for relative, text in files.items():
        storage.write_text(storage.join(output, *relative.split("/")), text)
    with pytest.raises(InputError, match="holds files a pipeline run does not write"):
        commit.begin(output, True)
    for relative, text in files.items():
        assert storage.read_text(storage.join(output, *relative.split("/"))) == text
