"""How a command ends: its exit code, with its own error line last on stderr."""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def imports_without_gc() -> Iterator[None]:
    """Imports with Python's cyclic garbage collector paused, then what they built frozen.

    TensorFlow, tf.Transform and Beam leave a few million objects behind on import, and each
    full collection walks all of them again: in a 1,000-row pipeline run, seven of them took
    0.8 s, most during the imports themselves. Imports make little cyclic garbage. After the
    block, its objects go to the collector's permanent generation (`gc.freeze`), which later
    collections skip, and the collector runs as before (or stays off if it was).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def run_main(main: Callable[[], int]) -> None:
    """Runs a command's `main` and exits with its code, leaving the last line on stderr ours.

    Once TensorFlow is loaded, the interpreter's shutdown takes about a second (it collects
    every module and TensorFlow object one by one) and, after a failure, prints a dozen
    `Exception ignored in: AtomicFunction.__del__` tracebacks after the error line. The
    command has nothing left to clean up when `main` returns (its `finally` blocks have run):
    the streams are flushed and the process ends without that shutdown. After a success the
    exit handlers run first (logging's flush, TensorFlow's removal of its temporary files);
    after a failure or a stop only logging's flush, so that nothing can hang or print after
    the command's last line. A bug keeps its traceback, then ends the same way. Ctrl-C and
    SIGTERM (what `timeout`, schedulers and Kubernetes send) stop the command alike: its
    cleanup runs (a pipeline run deletes its staging folder), then one line, and exit code
    130.
    """
    handle_stops()
    try:
        code = main()
    except Exception as e:
        if not is_interrupt(e):
            traceback.print_exc()
            code = 1
        else:
            code = _say_interrupted()
    except KeyboardInterrupt:
        code = _say_interrupted()
    if "tensorflow" in sys.modules:
        _exit_now(code)
    sys.exit(code)


def _exit_now(code: int) -> None:
    """Ends the process with `code`, skipping the interpreter's shutdown; after a success,
    after the exit handlers (see `run_main`)."""
    try:
        if code == 0:
            atexit._run_exitfuncs()  # logging.shutdown among them
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


INTERRUPTED = 130
"""The exit code of a command stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells use)."""


_stop: list[int] = []
"""The signals that asked the command to stop, in the order they came."""


def _interrupt(signum, frame) -> None:
    _stop.append(signum)
    raise KeyboardInterrupt


def _unraisable(unraisable) -> None:
    """Python ignores an exception raised in a finalizer (`__del__`) and prints it: a stop
    whose KeyboardInterrupt lands in one (TensorFlow's `AtomicFunction.__del__` runs often)
    would be lost, and the run go on to commit. The stop is remembered (`stop_requested`),
    so it is silent here; the command stops at its next `raise_if_stopped`."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _stop:
        return
    sys.__unraisablehook__(unraisable)


def handle_stops() -> None:
    """SIGTERM stops the command as Ctrl-C does, and both are remembered even where their
    KeyboardInterrupt is lost (see `_unraisable`). Called first thing, before the seconds of
    imports, and again by `run_main`."""
    signal.signal(signal.SIGTERM, _interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt)
    sys.unraisablehook = _unraisable
    global _arrivals
    if _arrivals is None and threading.current_thread() is threading.main_thread():
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        _arrivals = read
    if threading.excepthook is not _thread_error:
        global _default_thread_hook
        _default_thread_hook = threading.excepthook
        threading.excepthook = _thread_error


_default_thread_hook = threading.excepthook


def _thread_error(args) -> None:
    """After a stop, an error in another thread is its consequence (the local runner's
    thread of a worker process the same Ctrl-C ended): the command's one line says it all.
    Before a stop, Python's own report."""
    if not stopping(within=STOP_GRACE_S):
        _default_thread_hook(args)


STOP_GRACE_S = 0.5
"""How long an error in another thread waits for the stop it may be the consequence of: a
signal to the whole process group ends a worker process at once, while this process's
handler runs when its main thread next runs Python."""


_arrivals: int | None = None
"""The read end of the pipe Python's C-level signal handler writes each signal's number to
(`signal.set_wakeup_fd`) the moment it arrives, before the main thread runs its handler."""
_arrived: list[int] = []


def _signal_arrived() -> bool:
    """Whether SIGINT or SIGTERM has arrived, even if the main thread, blocked in native
    code, has not run its handler yet."""
    if _arrivals is not None and not _arrived:
        try:
            numbers = os.read(_arrivals, 512)
        except (BlockingIOError, OSError):
            numbers = b""
        _arrived.extend(n for n in numbers if n in (signal.SIGINT, signal.SIGTERM))
    return bool(_arrived)


def stopping(within: float = 0.0) -> bool:
    """Whether a stop was asked (or its signal has arrived), waiting up to `within` seconds."""
    deadline = time.monotonic() + within
    while not (_stop or _signal_arrived()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(_stop or _arrived)


def stop_requested() -> bool:
    """Whether Ctrl-C or SIGTERM asked this process to stop."""
    return bool(_stop)


def raise_if_stopped() -> None:
    """Raises KeyboardInterrupt if a stop was asked, even one whose KeyboardInterrupt a
    finalizer swallowed: long loops call it each block, and a run calls it before it commits."""
    if _stop:
        raise KeyboardInterrupt


def exit_interrupted() -> None:
    """Ends a command stopped before `run_main` began (while it imported its libraries)."""
    sys.exit(_say_interrupted())


def is_interrupt(error: object) -> bool:
    """Whether `error` is an interrupt that a library wrapped (Beam re-raises one from inside a
    step as a RuntimeError naming the step)."""
    seen = set()
    while isinstance(error, BaseException) and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, KeyboardInterrupt) or str(error).startswith("KeyboardInterrupt"):
            return True
        error = error.__cause__ or error.__context__
    return False


def _say_interrupted() -> int:
    """The stop's one line, named after the command as its other lines are."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    command = f"{spec.name.split('.')[0]}: " if spec is not None else ""
    print(f"{command}interrupted: stopped before the end", file=sys.stderr)
    return INTERRUPTED
