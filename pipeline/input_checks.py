"""The launcher's checks of the input, before any Beam pipeline is built.

They fail fast, with the file named, on what can be checked cheaply: a pattern that matches
no file, an empty CSV file, columns the config names but the data lacks, an input with no
data row at all. They read one file's first lines (a few more only while the files seen so
far hold no data row), so they take the same time over 2 files and over 20,000. What needs
every file opened, a CSV header that differs from the first file's, is checked by the
reader on the workers when it reads each file's first line (`pipeline.sources`).
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Sequence

from apache_beam.io.filesystem import CompressionTypes, FileMetadata
from apache_beam.io.filesystems import FileSystems

from common import storage
from common.config import LIST_TYPES, Config
from common.process import is_interrupt
from pipeline import decode
from pipeline.input_files import InputError, csv_header, header_mismatch, open_checked

LOG = logging.getLogger("pipeline")


def folder_patterns(patterns: Sequence[str]) -> list[str]:
    """The --input patterns with a folder named without its trailing separator given one.

    Beam reads `DIR/` as the files in DIR, but `DIR` as one "file" that cannot be read:
    one rule for both spellings. A pattern with glob characters is left as it is; so is one
    naming a file. On Cloud Storage a "folder" is a prefix with objects under it.
    """
    result = []
    for pattern in patterns:
        separator = "/" if storage.is_remote(pattern) else _local_separator()
        plain = not any(c in pattern for c in storage.GLOB_CHARACTERS)
        if plain and not pattern.endswith(separator) and _is_folder(pattern):
            pattern += separator
        result.append(pattern)
    return result


def _local_separator() -> str:
    import os

    return os.sep


def _is_folder(path: str) -> bool:
    if not storage.is_remote(path):
        import os

        return os.path.isdir(path)
    return not storage.is_file(path) and storage.exists(path)


def match_inputs(patterns: Sequence[str]) -> list[FileMetadata]:
    """Every file the patterns match, once each, in pattern order and sorted within one.

    A file that two patterns match is listed once; the pipeline's reader, which matches the
    same patterns again on the workers, reads it once too.

    Raises:
      InputError: a pattern matches no file.
    """
    files: dict[str, FileMetadata] = {}
    for pattern in patterns:
        matched = sorted(FileSystems.match([pattern])[0].metadata_list, key=lambda m: m.path)
        if not matched:
            raise InputError(f"--input {pattern!r} matches no file")
        for metadata in matched:
            files.setdefault(storage.canonical(metadata.path), metadata)
    return list(files.values())


def _first_lines(path: str, count: int) -> list[bytes]:
    lines = []
    with open_checked(path) as f:
        for _ in range(count):
            line = f.readline()
            if not line:
                break
            lines.append(line)
    return lines


def _tf_compression(path: str) -> str | None:
    """The `tf.data.TFRecordDataset` compression of a file, by its extension as Beam reads
    it; None for a compression TensorFlow cannot read (the file is then not inspected)."""
    kind = CompressionTypes.detect_compression_type(path)
    return {
        CompressionTypes.UNCOMPRESSED: "",
        CompressionTypes.GZIP: "GZIP",
        CompressionTypes.DEFLATE: "ZLIB",
    }.get(kind)


def _first_example_keys(path: str, compression: str) -> list[str] | None:
    """The feature names of a TFRecord file's first tf.Example; None for an empty file, and
    for a first record that is not a tf.Example (it is rejected as a row, with its reason).

    Raises:
      InputError: the file is not TFRecord data, or is damaged where the first record is.
    """
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    try:
        for record in tf.data.TFRecordDataset(path, compression_type=compression).take(1):
            try:
                return list(tf.train.Example.FromString(record.numpy()).features.feature)
            except DecodeError:
                return []
    except tf.errors.OpError as e:
        raise InputError(
            f"{path}: not a valid TFRecord file ({' '.join(e.message.split())}). Replace it "
            "with an intact copy and rerun"
        ) from None
    return None


def _scalar_columns(config: Config) -> list[str]:
    """Columns every record must carry (a sequence or bag column may be absent: it is empty)."""
    return [
        c
        for c in config.columns()
        if c == config.label.name
        or c == config.split.key
        or config.feature(c).type not in LIST_TYPES
    ]


def _inspect_csv(path: str, config: Config) -> tuple[list[str], bool]:
    lines = _first_lines(path, 2)
    if not lines:
        raise InputError(f"{path}: the file is empty; a CSV input needs a header row")
    try:
        header = csv_header(lines[0], config.input.field_delimiter)
        decode.check_columns(header, config, path)
    except UnicodeDecodeError:
        raise InputError(f"{path}: the header row is not UTF-8 text") from None
    except ValueError as e:
        message = str(e)
        raise InputError(message if message.startswith(path) else f"{path}: {message}") from None
    return header, len(lines) > 1


def _inspect_jsonl(path: str, config: Config) -> bool:
    lines = [line for line in _first_lines(path, 50) if line.strip()]
    if not lines:
        return False
    try:
        first = json.loads(lines[0])
    except (ValueError, RecursionError):
        return True  # a bad line (or one nested too deeply) is rejected row by row, not here
    if isinstance(first, dict):
        absent = [c for c in _scalar_columns(config) if c not in first]
        if absent:
            raise InputError(
                f"{path}: the first record has no {', '.join(map(repr, absent))}"
                f" that the config names; it has: {', '.join(first)}"
            )
    return True


def _inspect_tfrecord(path: str, config: Config) -> bool:
    compression = _tf_compression(path)
    if compression is None:
        LOG.info("%s: not inspected (a compression TensorFlow does not read)", path)
        return True
    keys = _first_example_keys(path, compression)
    if keys is None:
        return False
    if not keys:
        return True  # a record that is no tf.Example: rejected row by row, not here
    absent = [c for c in _scalar_columns(config) if c not in keys]
    if absent:
        raise InputError(
            f"{path}: the first tf.Example has no feature "
            f"{', '.join(map(repr, absent))} that the config names; it has: "
            f"{', '.join(sorted(keys))}"
        )
    return True


def _inspect_parquet(path: str, config: Config) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as f:
        try:
            parquet = pq.ParquetFile(f)
            names = parquet.schema_arrow.names
            rows = parquet.metadata.num_rows
        except (pa.ArrowException, OSError, ValueError) as e:
            raise InputError(
                f"{path}: not a readable Parquet file ({' '.join(str(e).split())}). Replace it "
                "with an intact copy and rerun"
            ) from None
    try:
        decode.check_columns(names, config, path, what="the Parquet schema")
    except ValueError as e:
        raise InputError(str(e)) from None
    return rows > 0


def inspect_inputs(files: Sequence[FileMetadata], config: Config) -> list[str] | None:
    """Checks the input files against the config before any pipeline runs.

    Opens the first file, and the next ones only until one holds a data row. Every CSV file
    the workers read is checked there against the header returned here.

    Args:
      files: the matched files (`match_inputs`), in order.
      config: the validated config.

    Returns:
      For CSV, the first file's header, which every file must share; None for other formats.

    Raises:
      InputError: an empty CSV file, data that lacks a column the config names, a CSV header
        that differs from the first file's, or no data row in any file.
    """
    fmt = config.input.format
    if fmt == "csv":
        empty = [m.path for m in files if m.size_in_bytes == 0]
        if empty:
            raise InputError(
                f"{empty[0]}: the file is empty; a CSV input needs a header row"
                + (f" ({len(empty) - 1} more empty file(s))" if len(empty) > 1 else "")
            )
    header = None
    for metadata in files:
        path = metadata.path
        if fmt == "csv":
            this, has_rows = _inspect_csv(path, config)
            if header is not None and this != header:
                raise InputError(header_mismatch(path, files[0].path))
            header = this
        elif fmt == "jsonl":
            has_rows = _inspect_jsonl(path, config)
        elif fmt == "tfrecord":
            has_rows = _inspect_tfrecord(path, config)
        else:
            has_rows = _inspect_parquet(path, config)
        if has_rows:
            return header
    raise InputError(
        f"no data rows in {len(files)} input file(s) ({files[0].path}"
        f"{', ...' if len(files) > 1 else ''}); nothing to measure"
    )


def out_of_space(error: BaseException) -> bool:
    """Whether the error, or one it was raised from, is a full disk (ENOSPC); Beam re-raises a
    worker's OSError as a RuntimeError that keeps only its text."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if f"[Errno {errno.ENOSPC}]" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


class BeamInputErrorFilter(logging.Filter):
    """Drops Beam's log of an InputError raised in a worker, traceback and all.

    Beam logs every exception a DoFn raises, with its traceback, before the pipeline re-raises
    it; an InputError (a damaged or changed input file) is the user's to fix, and
    `python -m pipeline` prints it as its one-line error; so is a full disk (ENOSPC), and so
    is an interrupt (Ctrl-C, SIGTERM: "interrupted"). Other exceptions keep their log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, InputError) or is_interrupt(record.msg):
            return False
        # A full disk: `python -m pipeline` says it in one line naming --output.
        return not (isinstance(record.msg, BaseException) and out_of_space(record.msg))


def quiet_beam_input_errors() -> None:
    """Installs `BeamInputErrorFilter` on the logger Beam's DoFn runner logs exceptions to."""
    logging.getLogger("apache_beam.runners.common").addFilter(BeamInputErrorFilter())
