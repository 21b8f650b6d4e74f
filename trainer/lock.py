"""One trainer per model directory: a lock file created only if absent.

Two trainers on one `--model-dir` would both report training "from step 0" and both write
checkpoints, evaluations and exports over each other. The first thing a run writes is
`MODEL_DIR/trainer.lock`, created atomically only if it does not exist (a local file opened
with O_EXCL; on Cloud Storage an object written with the precondition "generation 0", which
the service grants to one writer only). A second trainer is refused with a line naming the
holder. A lock left by a dead process on this host (a kill -9) is broken, and said; one held
from another host cannot be checked from here and is broken only with `--break-lock`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

from common import storage
from trainer.checks import TrainerError

LOG = logging.getLogger("trainer")
LOCK = "trainer.lock"


def _process_start(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _holder() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "process_start": _process_start(os.getpid()),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }


def _create_exclusive(path: str, text: str) -> bool:
    """Writes `text` to `path` only if nothing is there; False when something is."""
    if storage.is_remote(path):
        from apache_beam.io.gcp import gcsio
        from google.api_core import exceptions

        bucket, name = gcsio.parse_gcs_path(path)
        blob = gcsio.GcsIO().client.bucket(bucket).blob(name)
        try:
            blob.upload_from_string(text.encode(), if_generation_match=0)
        except exceptions.PreconditionFailed:
            return False
        return True
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return True


def _read_holder(path: str) -> dict[str, Any]:
    try:
        value = json.loads(storage.read_text(path))
        return value if isinstance(value, dict) else {}
    except Exception:  # a lock cut short by a kill during its write is still a lock
        return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "a holder whose lock file is unreadable"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
        f"{holder.get('command', '')}"
    ).rstrip(": ")


def _dead_here(holder: dict[str, Any]) -> bool:
    """Whether the holder ran on this host and that process is gone."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    start = _process_start(holder["pid"])
    return start is None or start != holder.get("process_start")


@contextlib.contextmanager
def hold(model_dir: str, break_lock: bool = False) -> Iterator[None]:
    """Holds MODEL_DIR's lock for the `with` block; released at its end, error or not.

    Raises:
      TrainerError: another trainer holds the lock (naming it), or MODEL_DIR is a file.
    """
    try:
        is_file = storage.is_file(model_dir)
    except Exception as e:  # Cloud Storage out of reach (after its client's retries), ...
        first = (str(e).splitlines() or [""])[0][:300]
        raise TrainerError(
            f"--model-dir {model_dir} cannot be read: {type(e).__name__}: {first}"
        ) from None
    if is_file:
        raise TrainerError(f"--model-dir {model_dir} is a file; give a directory")
    if not storage.is_remote(model_dir):  # an object store has no directories to make
        try:
            os.makedirs(model_dir, exist_ok=True)
        except OSError as e:  # a file where a folder of the path should be, no permission
            raise TrainerError(f"--model-dir {model_dir} cannot be made: {e.strerror}") from None
    path = storage.join(model_dir, LOCK)
    mine = json.dumps(_holder())
    if not _create_exclusive(path, mine):
        holder = _read_holder(path)
        if _dead_here(holder):
            LOG.warning("Breaking a stale lock of %s: that process is gone", _describe(holder))
        elif break_lock:
            LOG.warning("Breaking the lock of %s (--break-lock)", _describe(holder))
        else:
            raise TrainerError(
                f"{model_dir} is in use by another trainer ({_describe(holder)}); wait for it "
                f"to end, or, if it is dead, rerun with --break-lock (deletes {path})"
            )
        storage.delete_files([path])
        if not _create_exclusive(path, mine):
            raise TrainerError(f"{model_dir} was locked again by another trainer meanwhile")
    try:
        yield
    finally:
        if _read_holder(path) == json.loads(mine):
            storage.delete_files([path])
