"""Progress of long work, as a person reads it: done / total, rate, what is left.

On a terminal a bar that redraws in place (tqdm); in a log or a pipe a plain line every
`every_s` seconds through the command's logger, so a log file gets a line a while, not a
redrawn bar. Pure Python: no TensorFlow or Beam.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import IO

DEFAULT_EVERY_S = 10.0


def duration(seconds: float) -> str:
    """Seconds as `1h02m`, `3m05s` or `42s`."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Progress:
    """Reports `done` of `total` units as work goes on.

    Args:
      logger: where the plain lines go (a log or a pipe).
      what: what is being done, the start of every line ("training").
      total: the units to do; None when unknown (no share and no time left).
      unit: what a unit is ("steps", "rows").
      every_s: seconds between two plain lines.
      bar: draw a bar on a terminal; None: when `stream` is a terminal.
      stream: the terminal the bar is drawn on.
      clock: seconds, monotonic (the tests pass their own).
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        total: int | None = None,
        unit: str = "steps",
        every_s: float = DEFAULT_EVERY_S,
        bar: bool | None = None,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._logger = logger
        self._what = what
        self._total = total
        self._unit = unit
        self._every_s = every_s
        self._clock = clock
        self._start_time = clock()
        self._start_done: int | None = None
        self._last_line = self._start_time
        self._done = 0
        stream = stream if stream is not None else sys.stderr
        if bar is None:
            bar = bool(getattr(stream, "isatty", lambda: False)())
        self._bar = None
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                desc=what,
                unit=f" {unit}",
                file=stream,
                dynamic_ncols=True,
                leave=True,
                unit_scale=False,
            )

    def update(self, done: int, detail: str = "") -> None:
        """Sets the units done so far (absolute, not an increment), with an optional detail
        (`loss 0.4312`)."""
        if self._start_done is None:
            self._start_done = done
        self._done = done
        if self._bar is not None:
            self._bar.n = done
            if detail:
                self._bar.set_postfix_str(detail, refresh=False)
            self._bar.refresh()
            return
        now = self._clock()
        if now - self._last_line >= self._every_s:
            self._last_line = now
            self._logger.info("%s", self.line(detail))

    def rate(self) -> float:
        """Units a second since the first update."""
        elapsed = self._clock() - self._start_time
        return (self._done - (self._start_done or 0)) / elapsed if elapsed > 0 else 0.0

    def line(self, detail: str = "") -> str:
        """The plain line: `training: 1,200/3,000 steps (40%), 210 steps/s, loss 0.43, 9s left`."""
        rate = self.rate()
        parts = [f"{self._what}: {self._done:,}"]
        if self._total:
            parts[0] += f"/{self._total:,} {self._unit} ({self._done / self._total:.0%})"
        else:
            parts[0] += f" {self._unit}"
        parts.append(f"{rate:,.0f} {self._unit}/s")
        if detail:
            parts.append(detail)
        if self._total and rate > 0:
            parts.append(f"{duration((self._total - self._done) / rate)} left")
        return ", ".join(parts)

    def close(self) -> None:
        """Ends the bar (a terminal keeps its last state)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
