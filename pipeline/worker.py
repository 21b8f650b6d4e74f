"""A Beam SDK worker process for `--direct_running_mode multi_processing`, as quiet as the
command that started it.

Beam starts each worker as `python -m apache_beam.runners.worker.sdk_worker_main`: every
worker then printed TensorFlow's import lines and the libraries' warnings, which the command
itself drops (common/console.py). This module sets what the command sets before TensorFlow
is imported, imports it without those lines, then runs Beam's worker. The worker's own logs
still reach the command through Beam's logging service.

A Ctrl-C or SIGTERM to the process group ends a worker at once and quietly (the command
stops the run and says so in its one line), and a worker ends when the command is gone (a
SIGKILL'd command cannot stop it).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from common import console, process

PARENT = "PIPELINE_COMMAND_PID"
"""The environment variable by which a worker knows the command that started it."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _end_with(parent: int) -> None:
    """Ends this worker when the command is gone (killed, it cannot stop its workers), and
    quietly: the threads that lose their connection to it end the worker at once."""
    default = threading.excepthook

    def thread_error(args):
        if not _alive(parent):
            os._exit(1)
        default(args)

    threading.excepthook = thread_error
    while _alive(parent):
        time.sleep(1.0)
    os._exit(1)


def _stop(signum, frame) -> None:
    """A Ctrl-C or SIGTERM to the whole process group: the command stops the run and says
    so in one line; the worker ends at once, without a traceback of its own."""
    os._exit(128 + signum)


class _WithoutLostCommand:
    """The worker's stderr without Beam's "Logging client failed" report: here the logging
    server is the command itself, and it is gone or ending (a stop, or the run's end)."""

    def __init__(self, stream):
        self._stream = stream
        self._dropped = False

    def write(self, text: str) -> int:
        dropped = text.startswith("Logging client failed:") or (self._dropped and text == "\n")
        self._dropped = dropped
        return len(text) if dropped else self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main() -> None:
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    sys.stderr = _WithoutLostCommand(sys.stderr)
    parent = os.environ.get(PARENT)
    if parent:
        threading.Thread(target=_end_with, args=(int(parent),), daemon=True).start()
    verbose = console.start([])
    with process.imports_without_gc():
        console.import_tensorflow(verbose)
        from apache_beam.runners.worker import sdk_worker_main

    if not verbose:
        # The libraries' INFO lines (TensorFlow's "Assets written to ...") as the command
        # drops them; Beam's worker sets up the handlers, which these levels filter. A
        # command started with -v has its workers show them (console.VERBOSE_ENV).
        for name in console.LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        console.quiet_absl()
    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    main()
