"""Our own file operations, the same on a local disk and on Cloud Storage (`gs://`).

Existence, listing, deletion, small reads and writes, and moves of the files this project
writes all go through here, on Apache Beam's `FileSystems`, so that one set of rules decides
what exists and what gets deleted wherever OUTPUT lives (tf.io.gfile answers the same
questions differently on object stores: it pretends to see directories).

Object stores have no directories, only objects whose names share a prefix:
`FileSystems.exists("gs://b/out")` is False while `gs://b/out/a.txt` exists, and deleting
`gs://b/out` matches nothing. Here a path names a file or a tree: it exists if a file (object)
has exactly that name or any file lies under `path/`, and deleting a tree deletes exactly the
files under `path/` (never those of a sibling such as `path2/` or `path.incomplete-X/`).

Paths must not contain the glob characters `*`, `?` or `[`: listing a tree asks Beam for
the pattern `path/**`, and Beam has no way to quote them.

Beam is imported on first use (about a second), not when this module is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

GLOB_CHARACTERS = "*?["


def _filesystems():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def _uncompressed():
    from apache_beam.io.filesystem import CompressionTypes

    # Beam's default (AUTO) would gunzip a file whose name ends in .gz: we move bytes as they are.
    return CompressionTypes.UNCOMPRESSED


def is_remote(path: str) -> bool:
    """Whether `path` names an object store (`gs://...`) rather than the local disk."""
    return "://" in path


def canonical(path: str) -> str:
    """One spelling per file: a local path absolute, normalized and with its links resolved
    (`a//b`, `./b` and a link to `b` name one file); an object store's path as it is."""
    if is_remote(path):
        return path
    import os

    return os.path.realpath(os.path.abspath(path))


def join(*parts: str) -> str:
    """`parts` joined with the separator of the first part's file system."""
    if is_remote(parts[0]):
        return "/".join([parts[0].rstrip("/"), *(p.strip("/") for p in parts[1:])])
    import os

    return os.path.join(*parts)


def _tree(path: str) -> str:
    """`path` with exactly one trailing separator: the prefix of everything under it."""
    for character in GLOB_CHARACTERS:
        if character in path:
            raise ValueError(
                f"{path}: a path with {character!r} in it cannot be listed or deleted as a "
                "tree (Beam reads it as a glob); choose a name without *, ? or ["
            )
    separator = "/" if is_remote(path) else _local_separator()
    return path.rstrip(separator) + separator


def _local_separator() -> str:
    import os

    return os.sep


def _has_directories(path: str) -> bool:
    return _filesystems().get_filesystem(path).has_dirs()


def list_files(path: str) -> dict[str, int]:
    """Every file under `path/`, by its path relative to `path` ('/'-separated), with its size.

    Returns an empty dict when nothing lies under `path/` (a missing tree is not an error).
    """
    tree = _tree(path)
    fs = _filesystems()
    (result,) = fs.match([tree + "**"])
    files = {}
    for metadata in result.metadata_list:
        if metadata.path.endswith("/"):
            continue  # a "folder" placeholder object some tools create, not a file
        relative = metadata.path[len(tree) :]
        if not is_remote(path):
            relative = relative.replace(_local_separator(), "/")
        files[relative] = metadata.size_in_bytes
    return dict(sorted(files.items()))


def is_file(path: str) -> bool:
    """Whether a file (an object) is named exactly `path`: not a directory, not a prefix."""
    if not is_remote(path):
        import os

        return os.path.isfile(path)
    return _filesystems().exists(path)


def exists(path: str) -> bool:
    """Whether a file is named `path` or any file lies under `path/` (a "directory").

    A local directory counts even when it is empty; on an object store an empty "directory"
    cannot exist.
    """
    fs = _filesystems()
    if fs.exists(path):
        return True
    (result,) = fs.match([_tree(path) + "**"], limits=[1])
    return bool(result.metadata_list)


def size(path: str) -> int:
    """The size of the file `path`, in bytes."""
    return _filesystems().get_filesystem(path).size(path)


def read_bytes(path: str) -> bytes:
    """The contents of the file `path`."""
    with _filesystems().open(path, compression_type=_uncompressed()) as f:
        return f.read()


def sha256(path: str) -> str:
    """The SHA-256 of the file `path`, read in blocks of 8 MiB (files of any size)."""
    import hashlib

    digest = hashlib.sha256()
    with _filesystems().open(path, compression_type=_uncompressed()) as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def crc32c_text(checksum) -> str:
    """A `google_crc32c.Checksum` as Cloud Storage reports an object's crc32c: the base64 of
    the big-endian CRC32C."""
    import base64

    return base64.b64encode(checksum.digest()).decode("ascii")


def crc32c(path: str) -> str:
    """The CRC32C of the file `path` as Cloud Storage reports it (`crc32c_text`), read in
    blocks of 8 MiB."""
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with _filesystems().open(path, compression_type=_uncompressed()) as f:
        while block := f.read(8 << 20):
            checksum.update(block)
    return crc32c_text(checksum)


def open_stream(path: str, buffer_bytes: int):
    """Opens the file `path` to be read as a stream, about `buffer_bytes` fetched at a time.

    Beam's `FileSystems.open` fetches a Cloud Storage object 16 MiB at a time whatever is
    asked for, so a merge of many files open at once would hold 16 MiB for each; here the
    object is read through Beam's GcsIO with a buffer of `buffer_bytes` instead. A local
    file is opened as Beam opens it.
    """
    if path.startswith("gs://"):
        from apache_beam.io.gcp.gcsio import GcsIO

        return GcsIO().open(path, "rb", read_buffer_size=buffer_bytes)
    return _filesystems().open(path, compression_type=_uncompressed())


def read_text(path: str) -> str:
    """The contents of the UTF-8 text file `path`."""
    return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> str:
    """Writes `data` as the file `path` (replacing it; local parent directories are created).

    On Cloud Storage the object appears whole when it is closed. Locally a crash can leave a
    partial file; what we write this way is JSON or text that a reader validates.

    Returns:
      `path`.
    """
    with _filesystems().create(path, compression_type=_uncompressed()) as f:
        f.write(data)
    return path


def write_text(path: str, text: str) -> str:
    """Writes `text` as the UTF-8 file `path`; returns `path`."""
    return write_bytes(path, text.encode("utf-8"))


def delete_files(paths: Iterable[str]) -> None:
    """Deletes the files `paths`; a file that does not exist is not an error."""
    fs = _filesystems()
    present = [p for p in paths if fs.exists(p)]
    if present:
        fs.delete(present)


def delete_tree(path: str) -> None:
    """Deletes the file `path` and every file under `path/`; siblings are never touched.

    Nothing to delete is not an error.
    """
    fs = _filesystems()
    if _has_directories(path):
        # One recursive delete of the directory (or file) itself.
        if fs.exists(path):
            fs.delete([path])
        return
    # One listing of the prefix, then deletes in batches (Beam matches the pattern itself).
    fs.delete([_tree(path) + "**"])
    delete_files([path])


def move_tree(source: str, destination: str, rename: Callable[[str], str] | None = None) -> None:
    """Moves every file under `source/` to `destination/`, which must not exist yet.

    Locally this is one rename of the directory. On an object store every object is copied
    to its new name and then deleted, in batches (Beam's `FileSystems.rename`): a failure can
    leave some files moved and others not.

    Args:
      source: the tree to move.
      destination: where it goes.
      rename: maps a file's '/'-separated path relative to `source` to its path relative to
        `destination` (default: the same path). Locally the files are renamed inside
        `source` first, then the directory is moved.

    Raises:
      FileExistsError: `destination` already exists.
    """
    if exists(destination):
        raise FileExistsError(f"{destination} exists; it must be deleted before moving into it")
    fs = _filesystems()
    rename = rename or (lambda relative: relative)
    files = [(relative, rename(relative)) for relative in list_files(source)]
    if _has_directories(source):
        renamed = [(join(source, old), join(source, new)) for old, new in files if old != new]
        if renamed:
            fs.rename([old for old, _ in renamed], [new for _, new in renamed])
        fs.rename([source], [destination])
    elif files:
        fs.rename(
            [join(source, old) for old, _ in files], [join(destination, new) for _, new in files]
        )
