"""What the launcher's input checks and the workers' reader share about an input file.

The error that names a bad input file (`InputError`), the CSV header as both read it, and
`open_checked`: a file opened as Beam's readers open it, by its name's compression, except that
gzip, bzip2, xz, deflate and zstd files are decompressed with Python's zlib, bz2, lzma or
zstandard, which check every member's (frame's) end and checksum (Beam's own decompression
stops quietly at a cut, so a truncated `.csv.gz` would be read as a shorter file). The
launcher reads a file's first lines through it (`pipeline.input_checks`), the workers every
line (`pipeline.sources`).
"""

from __future__ import annotations

import bz2
import csv
import io
import lzma
import zlib

import zstandard
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline import decode


class InputError(ValueError):
    """Input files that are missing, empty, or do not match the config."""


def csv_header(line: bytes, delimiter: str) -> list[str]:
    """The column names of a CSV header line (a UTF-8 byte order mark and newline removed).

    Raises:
      UnicodeDecodeError: the line is not UTF-8.
      ValueError: the line holds a carriage return (the file's lines end with a CR alone, as
        on old Macs, so the whole file reads as one line), or is not CSV.
    """
    text = line.decode("utf-8-sig").rstrip("\r\n")
    if "\r" in text:
        raise ValueError(
            "the header line holds a carriage return (CR): the file's lines end with CR alone "
            "(old Mac line ends); convert them to LF or CRLF line ends"
        )
    try:
        return decode.parse_header(text, delimiter)
    except csv.Error as e:
        raise ValueError(f"the header line is not CSV: {e}") from None


def header_mismatch(path: str, first: str) -> str:
    """The message for a CSV file whose header differs from the first file's."""
    return (
        f"{path}: its header differs from {first}'s; every input file must have the same "
        "columns in the same order"
    )


_READ_BYTES = 1 << 20

# What Python's decompressors raise on damaged data: zlib.error, OSError (bz2's "Invalid data
# stream"), lzma.LZMAError, EOFError, zstandard.ZstdError.
_DAMAGED = (zlib.error, OSError, lzma.LZMAError, EOFError, zstandard.ZstdError)


def _gzip_decompressor():
    return zlib.decompressobj(zlib.MAX_WBITS | 16)  # gzip framing: the trailer is checked


def _zstd_decompressor():
    # The window Beam's own reader allows (python-zstandard's default refuses large ones).
    return zstandard.ZstdDecompressor(max_window_size=1 << 31).decompressobj()


_DECOMPRESSORS = {
    CompressionTypes.GZIP: ("gzip", _gzip_decompressor),
    CompressionTypes.BZIP2: ("bzip2", bz2.BZ2Decompressor),
    CompressionTypes.LZMA: ("xz/lzma", lzma.LZMADecompressor),
    CompressionTypes.DEFLATE: ("deflate", zlib.decompressobj),
    CompressionTypes.ZSTD: ("zstd", _zstd_decompressor),
}
"""Every compression Beam detects from a file name (.gz, .bz2, .xz/.lzma, .deflate, .zst):
each is decompressed here, its end and checksums checked."""


class _CheckedDecompression(io.RawIOBase):
    """The decompressed bytes of a gzip, bzip2, xz, deflate or zstd file, its end and
    checksums checked.

    A file may hold several members (concatenated gzip files, as `cat a.gz b.gz` gives).
    Each must end complete: a member cut short (a file truncated, even at a flush point)
    raises InputError naming the file when the reader reaches the cut, and so does a member
    whose data or checksum is damaged (zlib checks a gzip member's CRC-32 and length).

    Args:
      raw: the compressed file, opened as bytes.
      path: its name, for the error.
      kind: its `CompressionTypes`, one of `_DECOMPRESSORS`.
    """

    def __init__(self, raw, path: str, kind: str):
        super().__init__()
        self._raw = raw
        self._path = path
        self._name, self._new = _DECOMPRESSORS[kind]
        self._decompressor = self._new()
        self._in_member = False  # whether the current member has begun
        self._pending = b""  # decompressed, from self._offset on not yet read
        self._offset = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._offset == len(self._pending) and not self._done:
            self._pending, self._offset = self._decompress_more(), 0
        count = min(len(buffer), len(self._pending) - self._offset)
        buffer[:count] = memoryview(self._pending)[self._offset : self._offset + count]
        self._offset += count
        return count

    def _decompress_more(self) -> bytes:
        data = b""
        if self._decompressor.eof:  # a member ended complete; another may follow
            data = self._decompressor.unused_data
            self._decompressor = self._new()
            self._in_member = False
        if not data:
            data = self._raw.read(_READ_BYTES)
        if not self._in_member and self._name in ("gzip", "xz/lzma"):
            data = data.lstrip(b"\0")  # zero padding after a member, as gzip and xz allow
            if not data and not self._done:
                data = self._read_past_zeros()
        if not data:
            self._done = True
            if self._in_member:
                raise self._error(
                    "it ends inside compressed data (the file is truncated, perhaps "
                    "copied or uploaded only in part)"
                )
            return b""
        self._in_member = True
        try:
            return self._decompressor.decompress(data)
        except _DAMAGED as e:
            raise self._error(f"its compressed data is damaged ({e})") from None

    def _read_past_zeros(self) -> bytes:
        while True:
            data = self._raw.read(_READ_BYTES)
            if not data:
                return b""
            data = data.lstrip(b"\0")
            if data:
                return data

    def _error(self, what: str) -> InputError:
        return InputError(
            f"{self._path}: not a complete {self._name} file: {what}. Replace it with a "
            "complete copy and rerun"
        )

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def open_checked(path: str):
    """Opens a file for reading as Beam's readers would, by its name's compression, but
    decompresses gzip, bzip2 and xz files with checks that their data is complete and intact.

    Raises (when read):
      InputError: a compressed file that is truncated or damaged, named.
    """
    kind = CompressionTypes.detect_compression_type(path)
    if kind not in _DECOMPRESSORS:
        return FileSystems.open(path, "application/octet-stream", compression_type=kind)
    raw = FileSystems.open(
        path, "application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED
    )
    return io.BufferedReader(_CheckedDecompression(raw, path, kind), buffer_size=_READ_BYTES)
