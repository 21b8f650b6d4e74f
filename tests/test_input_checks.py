"""The launcher's checks before Beam: fast over thousands of files, and each failure names the
file and what to do."""

import pytest
from apache_beam.io.filesystems import FileSystems

from common.config import parse_config
from examples.clicks import generate
from pipeline import input_checks
from pipeline.input_checks import inspect_inputs, match_inputs
from pipeline.input_files import InputError

pytestmark = pytest.mark.pipeline_env

COLUMNS = {
    "split": {"key": "user_id"},
    "label": {"name": "clicked"},
    "feature": [
        {"name": "item_id", "type": "categorical", "vocabulary": "items"},
        {"name": "history", "type": "sequence", "vocabulary": "items"},
        {"name": "price", "type": "numeric"},
    ],
}


def _config(fmt="csv"):
    return parse_config({"input": {"format": fmt}, **COLUMNS})


@pytest.fixture
def opened(monkeypatch):
    """The paths the checks open, in order."""
    paths = []
    original = FileSystems.open

    def spy(path, *args, **kwargs):
        paths.append(path)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(input_checks.FileSystems, "open", spy)
    return paths


def test_many_files_cost_one_open(tmp_path, opened):
    rows = generate.generate(500, seed=2)
    for i, row in enumerate(rows):
        generate.write_csv(str(tmp_path / f"part-{i:05d}.csv"), [row])
    files = match_inputs([str(tmp_path / "*.csv")])
    assert len(files) == 500
    assert inspect_inputs(files, _config()) == list(generate.HEADER)
    assert opened == [str(tmp_path / "part-00000.csv")]


def test_files_without_rows_are_passed_until_one_has_some(tmp_path, opened):
    header = ",".join(generate.HEADER) + "\n"
    (tmp_path / "a.csv").write_text(header)
    (tmp_path / "b.csv").write_text(header)
    generate.write_csv(str(tmp_path / "c.csv"), generate.generate(3))
    generate.write_csv(str(tmp_path / "d.csv"), generate.generate(3))
    inspect_inputs(match_inputs([str(tmp_path / "*.csv")]), _config())
    assert [p.rsplit("/", 1)[1] for p in opened] == ["a.csv", "b.csv", "c.csv"]


def test_an_empty_csv_file_is_named_without_opening_it(tmp_path, opened):
    generate.write_csv(str(tmp_path / "a.csv"), generate.generate(3))
    (tmp_path / "z.csv").write_bytes(b"")
    with pytest.raises(InputError, match=r"z\.csv: the file is empty; a CSV input needs a header"):
        inspect_inputs(match_inputs([str(tmp_path / "*.csv")]), _config())
    assert opened == []


def test_a_file_two_patterns_match_is_listed_once(tmp_path):
    for name in ("a.csv", "b.csv"):
        generate.write_csv(str(tmp_path / name), generate.generate(2))
    files = match_inputs([str(tmp_path / "a.csv"), str(tmp_path / "*.csv")])
    assert [f.path.rsplit("/", 1)[1] for f in files] == ["a.csv", "b.csv"]
    with pytest.raises(InputError, match=r"--input '.*nothing\*' matches no file"):
        match_inputs([str(tmp_path / "a.csv"), str(tmp_path / "nothing*")])


@pytest.mark.parametrize("name", ["c.tfrecord", "c.tfrecord.gz"])
def test_the_first_tf_example_is_read_with_tf_data(tmp_path, name):
    rows = generate.generate(3)
    generate.write_tfrecord(str(tmp_path / name), rows)
    files = match_inputs([str(tmp_path / name)])
    assert inspect_inputs(files, _config("tfrecord")) is None
    config = parse_config(
        {
            "input": {"format": "tfrecord"},
            **COLUMNS,
            "feature": [*COLUMNS["feature"], {"name": "brand", "type": "categorical"}],
        }
    )
    with pytest.raises(InputError, match=rf"{name}: the first tf.Example has no feature 'brand'"):
        inspect_inputs(files, config)


# Damaged first files: the launcher names the file in one line instead of a traceback.


def test_a_gzip_csv_that_is_not_gzip_is_named_before_beam(tmp_path):
    # (A truncated one is found by the workers, which read every file to its end.)
    path = tmp_path / "a.csv.gz"
    generate.write_csv(str(tmp_path / "a.csv"), generate.generate(50))
    path.write_bytes((tmp_path / "a.csv").read_bytes())
    with pytest.raises(InputError, match=r"a\.csv\.gz: not a complete gzip file: its compressed"):
        inspect_inputs(match_inputs([str(path)]), _config())


def test_a_damaged_tfrecord_is_named_and_a_record_that_is_no_example_is_left_to_the_rows(
    tmp_path,
):
    from pipeline.sinks import tfrecord_frames

    path = tmp_path / "c.tfrecord"
    path.write_bytes(tfrecord_frames([b"\xff\xfe not a tf.Example"]))
    assert inspect_inputs(match_inputs([str(path)]), _config("tfrecord")) is None
    data = bytearray(path.read_bytes())
    data[14] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(InputError) as error:
        inspect_inputs(match_inputs([str(path)]), _config("tfrecord"))
    assert str(error.value).startswith(f"{path}: not a valid TFRecord file (")
    assert "\n" not in str(error.value)


def test_a_damaged_parquet_file_is_named(tmp_path):
    path = tmp_path / "c.parquet"
    generate.write_parquet(str(path), generate.generate(20))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as error:
        inspect_inputs(match_inputs([str(path)]), _config("parquet"))
    assert str(error.value).startswith(f"{path}: not a readable Parquet file (")
    assert "\n" not in str(error.value)


def test_a_first_json_line_nested_too_deeply_is_left_to_the_rows(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("[" * 50_000 + "]" * 50_000 + "\n")
    assert inspect_inputs(match_inputs([str(path)]), _config("jsonl")) is None


def test_beam_logs_no_traceback_for_an_input_error(caplog):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline

    def refuse(path):
        raise InputError(f"{path}: damaged")

    input_checks.quiet_beam_input_errors()
    with pytest.raises(InputError, match="x.csv: damaged"):
        with TestPipeline() as p:
            _ = p | beam.Create(["x.csv"]) | beam.Map(refuse)

    def fail(_):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        with TestPipeline() as p:
            _ = p | beam.Create(["x"]) | beam.Map(fail)
    beam_records = [r for r in caplog.records if r.name == "apache_beam.runners.common"]
    assert [r.exc_info[0] for r in beam_records] == [KeyError]  # a bug keeps its traceback


def test_a_folder_named_without_its_trailing_separator_is_read_as_with_one(tmp_path):
    # `--input DIR` once matched DIR itself as a "file" and died opening it with a traceback.
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.csv", "b.csv"):
        generate.write_csv(str(folder / name), generate.generate(2))
    (tmp_path / "in.csv").write_text("not in the folder")
    patterns = input_checks.folder_patterns([str(folder), str(folder) + "/", str(tmp_path / "*")])
    assert patterns == [str(folder) + "/", str(folder) + "/", str(tmp_path / "*")]
    with_slash = [f.path for f in match_inputs([str(folder) + "/"])]
    assert sorted(with_slash) == [str(folder / "a.csv"), str(folder / "b.csv")]
    assert [f.path for f in match_inputs(patterns[:1])] == with_slash
    assert inspect_inputs(match_inputs(patterns[:1]), _config()) == list(generate.HEADER)
    assert input_checks.folder_patterns([str(folder / "a.csv")]) == [str(folder / "a.csv")]


def test_a_folder_on_cloud_storage_is_read_as_with_its_separator(gcs_root):
    from common import storage

    for name in ("a.csv", "b.csv"):
        storage.write_text(storage.join(gcs_root, "in", name), "user_id\n")
    storage.write_text(storage.join(gcs_root, "in.csv"), "user_id\n")
    folder = storage.join(gcs_root, "in")
    assert input_checks.folder_patterns([folder]) == [folder + "/"]
    assert sorted(f.path for f in match_inputs([folder + "/"])) == [
        storage.join(folder, "a.csv"),
        storage.join(folder, "b.csv"),
    ]
    single = storage.join(gcs_root, "in.csv")
    assert input_checks.folder_patterns([single]) == [single]


def test_a_csv_header_with_old_mac_line_ends_is_one_line(tmp_path):
    # Lines ending in CR alone: the whole file is one line, and the csv module's error
    # ended the run in a traceback.
    path = tmp_path / "mac.csv"
    generate.write_csv(str(path), generate.generate(3))
    path.write_bytes(path.read_bytes().replace(b"\r\n", b"\r"))
    with pytest.raises(InputError, match=r"mac\.csv: the header line holds a carriage return"):
        inspect_inputs(match_inputs([str(path)]), _config())
