"""What a command prints: its own lines by default, every library's with -v/--verbose.

Each command (`python -m pipeline`, `python -m embedding`, `python -m trainer.task`) calls
`start(argv)` first, before TensorFlow or Beam is imported, and `configure_logging(verbose)`
when it has parsed its flags. By default:

- TensorFlow's C++ log level (`TF_CPP_MIN_LOG_LEVEL`) is 3: TensorFlow 2.15 logs its cuDNN,
  cuFFT and cuBLAS "Unable to register factory" lines at ERROR on every import, with or
  without a GPU, so only 3 silences them. A C++ error that matters also fails the call that
  met it, with its message, as a Python exception, which the commands print. The level must
  be in the environment before `import tensorflow`; a value the user set is kept.
- The Python loggers of the libraries (absl, Beam, tfx_bsl, tf.Transform, TensorFlow) let
  only errors through; Dataflow's runner keeps its job and console lines.
- Warnings known to say nothing to a user of this tool are ignored by category and message,
  never all warnings.

Nothing else is done to stderr: an error a library logs or raises reaches the user whole. The
one exception is TensorFlow's import (`import_tensorflow`), whose native lines before absl's
log is set up no log level reaches: only the lines of `NATIVE_IMPORT_NOISE` are dropped there.
With `--verbose` nothing is silenced (the libraries log at INFO, as `logging.basicConfig`
sets them up). The noise each rule silences is listed in `KNOWN_NOISE`, which the tests
assert never reaches the user by default.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence

OWN_LOGGERS = ("pipeline", "embedding", "trainer")
"""The product's own loggers: their INFO lines are what a command prints."""

LIBRARY_LOGGERS = (
    "absl",
    "apache_beam",
    "tensorflow",
    "tensorflow_transform",
    "tfx_bsl",
    "h5py",
    "google",
    "urllib3",
)
"""Loggers that only let errors through by default."""

KEPT_LIBRARY_LOGGERS = ("apache_beam.runners.dataflow",)
"""Library loggers a user needs at INFO: Dataflow's job id and its console address. Their
lines of `KNOWN_NOISE` are dropped (the advice to pre-build a container on every job that
installs requirements: docs/dataflow.md says how)."""

IGNORED_WARNINGS = (
    # google-api-core, on any Python it will drop one day.
    (FutureWarning, r"You are using a (non-supported )?Python version"),
    # google-auth, on the grpcio the lock pins.
    (FutureWarning, r"grpcio < [0-9.]+ does not support Post-Quantum"),
    # TensorFlow 1's layers, which TPUEstimator's model_fn is written with.
    (UserWarning, r"`tf\.layers\.\w+` is deprecated"),
    # Beam's typehints on pyarrow and on our own annotations.
    (UserWarning, r".*[Tt]ype ?hint"),
)
"""(category, message regex) pairs of warnings that are not the user's business."""

KNOWN_NOISE = (
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "TF-TRT Warning",
    "rebuild TensorFlow with the appropriate compiler flags",
    "Converting string literal type hint to Any",
    "Using Any for unsupported type",
    "has a shape . Setting to DenseTensor",
    "Setting to varlen_sparse_tensor",
    "consider using tft.experimental.approximate_vocabulary",
    "No iterator is returned by the process method",
    "Starting finalize_write threads",
    "Renamed 1 shards in",
    "struct2tensor is not available",
    "tensorflow_decision_forests is not available",
    "tensorflow_text is not available",
    "Creating state cache with size",
    "Assets written to",
    "You are using a Python version",
    "You are using a non-supported Python version",
    "does not support Post-Quantum Cryptography",
    "oneDNN custom operations are on",
    "Could not find cuda drivers",
    "All log messages before absl::InitializeLog() is called",
    "global_step/sec",
    "is deprecated and will be removed",
    "`tf.layers.dense` is deprecated",
    "Calling checkpoint_exists",
    "Using config:",
    "Saving checkpoints for",
    "consider using the SDK container image pre-building workflow",
)
"""Lines the libraries print that a user of these commands need not read; none of them is
printed by default (tests/test_console.py runs each command and checks)."""

TF_CPP_DEFAULT = "3"

NATIVE_IMPORT_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "Could not find cuda drivers",
)
"""Lines TensorFlow's native libraries write at import (TensorFlow 2.16 and later log through
absl before absl's log is set up, so no log level reaches them); `import_tensorflow` drops
these and passes every other line on."""


@contextlib.contextmanager
def _native_stderr_without(noise: Sequence[str]) -> Iterator[None]:
    """Collects what native code writes to file descriptor 2 inside the block, then writes
    it to stderr less the lines that hold one of `noise`: nothing else is held back, also
    when the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    chunks: list[bytes] = []

    def drain() -> None:
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes: the reader sees its end
        os.close(saved)
        reader.join()
        os.close(read_end)
        text = b"".join(chunks).decode("utf-8", errors="replace")
        kept = [line for line in text.splitlines(True) if not any(n in line for n in noise)]
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def import_tensorflow(verbose: bool) -> None:
    """Imports TensorFlow once, without the lines of `NATIVE_IMPORT_NOISE` unless verbose.

    Called by a command after its flags are parsed (so that --help and --version never load
    TensorFlow), before the first library that imports it.
    """
    from common.process import imports_without_gc

    if "tensorflow" in sys.modules:
        return
    with imports_without_gc():
        if verbose:
            import tensorflow  # noqa: F401
        else:
            with _native_stderr_without(NATIVE_IMPORT_NOISE):
                import tensorflow  # noqa: F401


VERBOSE_ENV = "TPU_EMBEDDING_VERBOSE"
"""Set to 1 by a command started with -v, so that the processes it starts (Beam's local
workers) show the libraries' logs too."""


def wants_verbose(argv: Sequence[str] | None) -> bool:
    """Whether the command line asks for the libraries' logs (before argparse runs), or
    the command that started this process did."""
    args = sys.argv[1:] if argv is None else list(argv)
    return "-v" in args or "--verbose" in args or os.environ.get(VERBOSE_ENV) == "1"


def start(argv: Sequence[str] | None = None) -> bool:
    """Sets what must be set before TensorFlow is imported; returns whether verbose.

    Args:
      argv: the command's arguments (sys.argv[1:] when None).
    """
    verbose = wants_verbose(argv)
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_CPP_DEFAULT)
        # gRPC's native library (Beam's link to its worker processes) logs a closed
        # connection at INFO, through absl, as a stop ends them.
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        for category, message in IGNORED_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
    return verbose


class _OwnFormatter(logging.Formatter):
    """`name: message` for our INFO lines; the level too for warnings and errors."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            self._style._fmt = "%(name)s: %(levelname)s: %(message)s"
        else:
            self._style._fmt = "%(name)s: %(message)s"
        return super().format(record)


def configure_logging(verbose: bool) -> None:
    """Sets the loggers for a command: its own lines by default, every library's if verbose.

    Safe to call more than once in one process (the tests run several commands in one).
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(name)s: %(message)s") if verbose else _OwnFormatter()
        )
        handler.addFilter(_quiet_after_a_stop)
        if not verbose:
            handler.addFilter(_not_known_noise)
        root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)
    for name in KEPT_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    if not verbose:
        quiet_absl()


def _not_known_noise(record: logging.LogRecord) -> bool:
    """Drops a library's line of `KNOWN_NOISE` (from the loggers kept at INFO)."""
    if record.name.split(".")[0] in OWN_LOGGERS:
        return True
    message = record.getMessage()
    return not any(noise in message for noise in KNOWN_NOISE)


def _quiet_after_a_stop(record: logging.LogRecord) -> bool:
    """After Ctrl-C or SIGTERM, the libraries' lines are the stop's consequences (Beam's
    runner losing the worker processes the same signal ended): the command's one line says
    it. The product's own lines still pass."""
    from common import process

    if record.name.split(".")[0] in OWN_LOGGERS:
        return True
    other_thread = threading.current_thread() is not threading.main_thread()
    wait = process.STOP_GRACE_S if other_thread and record.levelno >= logging.ERROR else 0.0
    return not process.stopping(within=wait)


def quiet_absl() -> None:
    """absl logs through its own handler once absl.logging is imported by TensorFlow; its
    verbosity decides what reaches the `absl` logger."""
    if "absl.logging" in sys.modules:
        sys.modules["absl.logging"].set_verbosity("error")


def version() -> str:
    """The installed package's version."""
    from importlib import metadata

    try:
        return metadata.version("tpu-embedding-pipeline")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def add_flags(parser: argparse.ArgumentParser, role: str | None = None) -> None:
    """Adds -v/--verbose and --version to a command's parser.

    Args:
      parser: the command's parser.
      role: the environment the command runs in (`common.environments`): --version then
        names the stack it runs on as well; None: the project's version alone.
    """
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print the logs of TensorFlow, Beam and the other libraries",
    )
    if role is None:
        parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
        return
    from common import environments

    class _Version(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(environments.version(role))  # one line: argparse's own action wraps it
            parser.exit()

    parser.add_argument(
        "--version", nargs=0, action=_Version, help="print the versions this runs on and exit"
    )
