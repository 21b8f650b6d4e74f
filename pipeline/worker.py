"""A Beam SDK worker process for `--direct_running_mode multi_processing`, as quiet as the
command that started it.

Beam starts each worker as `python -m apache_beam.runners.worker.sdk_worker_main`: every
worker then printed TensorFlow's import lines and the libraries' warnings, which the command
itself drops (common/console.py). This module sets what the command sets before TensorFlow
is imported, imports it without those lines, then runs Beam's worker. The worker's own logs
still reach the command through Beam's logging service.
"""

from __future__ import annotations

import logging
import sys

from common import console, process


def main() -> None:
    verbose = console.start([])
    with process.imports_without_gc():
        console.import_tensorflow(verbose)
        from apache_beam.runners.worker import sdk_worker_main

    # The libraries' INFO lines (TensorFlow's "Assets written to ...") as the command drops
    # them; Beam's worker sets up the handlers, which these levels filter.
    for name in console.LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    console.quiet_absl()
    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    main()
