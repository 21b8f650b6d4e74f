"""`python -m pipeline`: see pipeline/run.py."""

import logging
import os
import sys
import traceback

from common import console

console.start()  # before Beam and TensorFlow are imported

from pipeline.run import main  # noqa: E402


def _exit(code: int) -> None:
    """Exits with `code`, leaving the last line on stderr ours.

    Once TensorFlow is loaded, the interpreter's shutdown collects its functions after their
    modules are gone and prints a dozen `Exception ignored in: AtomicFunction.__del__`
    tracebacks after the error line. A failed run has nothing left to clean up: the streams
    are flushed and the process ends without that shutdown.
    """
    if code and "tensorflow" in sys.modules:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    try:
        exit_code = main()
    except Exception:  # a bug: its traceback, then the same clean exit
        traceback.print_exc()
        exit_code = 1
    _exit(exit_code)
