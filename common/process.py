"""How a command ends: its exit code, with its own error line last on stderr."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable


def run_main(main: Callable[[], int]) -> None:
    """Runs a command's `main` and exits with its code, leaving the last line on stderr ours.

    Once TensorFlow is loaded, the interpreter's shutdown collects its functions after their
    modules are gone and prints a dozen `Exception ignored in: AtomicFunction.__del__`
    tracebacks after the error line. A failed run has nothing left to clean up (its `finally`
    blocks have run): the streams are flushed and the process ends without that shutdown. A
    bug keeps its traceback, then ends the same way.
    """
    try:
        code = main()
    except Exception:
        traceback.print_exc()
        code = 1
    if code and "tensorflow" in sys.modules:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
