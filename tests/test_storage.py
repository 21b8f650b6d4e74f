"""common/storage.py on the local disk and on a real Cloud Storage API server (the emulator):
a "directory" is a prefix, and deleting one never touches a sibling that shares its name's
beginning (`out` against `out2` and `out.incomplete-X`)."""

from __future__ import annotations

import gzip

import pytest
from apache_beam.io.filesystems import FileSystems

from common import storage

pytestmark = pytest.mark.pipeline_env


def _write(root: str, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        storage.write_bytes(storage.join(root, *relative.split("/")), data)


SIBLINGS = {
    "out/a.txt": b"a",
    "out/data/train-00000-of-00001.tfrecord.gz": b"shard",
    "out2/a.txt": b"sibling",
    "out.incomplete-1/a.txt": b"staging",
    "outfile": b"a file whose name begins like out",
}


def test_a_directory_exists_when_any_file_lies_under_it(any_root):
    _write(any_root, SIBLINGS)
    out = storage.join(any_root, "out")
    assert storage.exists(out)
    assert storage.exists(storage.join(out, "data"))
    assert storage.exists(storage.join(out, "a.txt"))
    assert not storage.exists(storage.join(any_root, "ou"))
    assert not storage.exists(storage.join(out, "dat"))
    assert not storage.exists(storage.join(any_root, "elsewhere"))


def test_beam_alone_does_not_see_object_store_directories(gcs_root):
    # The trap this layer exists for: on gs://, Beam's own exists() and delete() of a
    # "directory" see nothing.
    _write(gcs_root, SIBLINGS)
    out = storage.join(gcs_root, "out")
    assert not FileSystems.exists(out)
    FileSystems.delete([out])
    assert storage.list_files(out) == {"a.txt": 1, "data/train-00000-of-00001.tfrecord.gz": 5}


def test_delete_tree_deletes_everything_under_it_and_no_sibling(any_root):
    _write(any_root, SIBLINGS)
    storage.delete_tree(storage.join(any_root, "out"))
    assert not storage.exists(storage.join(any_root, "out"))
    assert storage.list_files(any_root) == {
        "out.incomplete-1/a.txt": 7,
        "out2/a.txt": 7,
        "outfile": 33,
    }
    storage.delete_tree(storage.join(any_root, "nothing-here"))  # not an error


def test_list_files_gives_relative_paths_and_sizes(any_root):
    _write(any_root, SIBLINGS)
    assert storage.list_files(storage.join(any_root, "out")) == {
        "a.txt": 1,
        "data/train-00000-of-00001.tfrecord.gz": 5,
    }
    assert storage.list_files(storage.join(any_root, "missing")) == {}


def test_bytes_are_read_back_as_written_whatever_the_name(any_root):
    payload = gzip.compress(b"not to be unpacked")
    path = storage.join(any_root, "x", "y.json.gz")
    storage.write_bytes(path, payload)
    assert storage.read_bytes(path) == payload
    assert storage.size(path) == len(payload)
    storage.write_text(path, "replaced ✓")
    assert storage.read_text(path) == "replaced ✓"


def test_move_tree_moves_every_file_and_renames_on_request(any_root):
    _write(any_root, SIBLINGS)
    source, destination = storage.join(any_root, "out"), storage.join(any_root, "moved")
    storage.move_tree(source, destination, lambda r: r.replace("train-", "train-RUN-"))
    assert not storage.exists(source)
    assert storage.list_files(destination) == {
        "a.txt": 1,
        "data/train-RUN-00000-of-00001.tfrecord.gz": 5,
    }
    assert storage.read_bytes(storage.join(destination, "a.txt")) == b"a"
    with pytest.raises(FileExistsError, match="must be deleted before"):
        storage.move_tree(storage.join(any_root, "out2"), destination)
    assert storage.list_files(storage.join(any_root, "out2")) == {"a.txt": 7}


def test_glob_characters_are_refused_for_trees(any_root):
    with pytest.raises(ValueError, match=r"out\[1\].*without \*, \? or \["):
        storage.list_files(storage.join(any_root, "out[1]"))
