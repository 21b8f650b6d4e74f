"""A block of text lines kept as the text they were read from."""

from __future__ import annotations

from collections.abc import Sequence


class LineBlock(Sequence[bytes]):
    """`count` lines, joined by newlines in `text` (no newline at the end).

    The reader makes blocks without splitting the text into lines, and the CSV decoder parses
    the text as it is; the lines are split out only when one is asked for (the row-by-row
    path, a rejected row's text).
    """

    __slots__ = ("text", "_count", "_lines")

    def __init__(self, text: bytes, count: int):
        self.text = text
        self._count = count
        self._lines: list[bytes] | None = None

    def lines(self) -> list[bytes]:
        if self._lines is None:
            self._lines = self.text.split(b"\n")
            if len(self._lines) != self._count:
                raise ValueError(f"a block of {self._count} lines holds {len(self._lines)}")
        return self._lines

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):
        return self.lines()[index]

    def __iter__(self):
        return iter(self.lines())

    def __eq__(self, other) -> bool:
        if isinstance(other, LineBlock):
            return self._count == other._count and self.text == other.text
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None

    def __repr__(self) -> str:
        return f"LineBlock({self._count} lines, {len(self.text):,} bytes)"

    def __reduce__(self):
        return LineBlock, (self.text, self._count)
