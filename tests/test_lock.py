"""One trainer per model directory (trainer.lock), locally and on Cloud Storage."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys

import pytest

from common import storage
from trainer import lock
from trainer.checks import TrainerError


def test_a_second_trainer_is_refused_naming_the_holder(tmp_path):
    model_dir = str(tmp_path / "model")
    with lock.hold(model_dir):
        holder = json.loads((tmp_path / "model" / lock.LOCK).read_text())
        assert holder["pid"] > 0 and holder["host"] == socket.gethostname()
        with pytest.raises(TrainerError, match=f"in use by another trainer \\(pid {holder['pid']}"):
            with lock.hold(model_dir):
                pass
        # The refused run did not take the lock away.
        assert (tmp_path / "model" / lock.LOCK).exists()
    assert not (tmp_path / "model" / lock.LOCK).exists()


def test_released_on_error(tmp_path):
    with pytest.raises(RuntimeError), lock.hold(str(tmp_path)):
        raise RuntimeError("training failed")
    assert not (tmp_path / lock.LOCK).exists()


def test_a_dead_process_lock_is_broken_and_said(tmp_path, caplog):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    (tmp_path / lock.LOCK).write_text(
        json.dumps(
            {
                "host": socket.gethostname(),
                "pid": pid,
                "process_start": "1",
                "started": "2026-01-01T00:00:00+00:00",
                "command": "old",
            }
        )
    )
    with caplog.at_level(logging.WARNING, "trainer"), lock.hold(str(tmp_path)):
        pass
    assert f"Breaking a stale lock of pid {pid}" in caplog.text


def test_another_hosts_lock_needs_break_lock(tmp_path, caplog):
    (tmp_path / lock.LOCK).write_text(
        json.dumps({"host": "tpu-vm-7", "pid": 1, "started": "2026-01-01T00:00:00+00:00"})
    )
    with pytest.raises(TrainerError, match="pid 1 on tpu-vm-7.*--break-lock"):
        with lock.hold(str(tmp_path)):
            pass
    with caplog.at_level(logging.WARNING, "trainer"), lock.hold(str(tmp_path), break_lock=True):
        assert json.loads((tmp_path / lock.LOCK).read_text())["host"] == socket.gethostname()
    assert "--break-lock" in caplog.text


def test_a_model_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "m").write_text("not a directory")
    with pytest.raises(TrainerError, match="is a file"):
        with lock.hold(str(tmp_path / "m")):
            pass


def test_on_cloud_storage_the_lock_is_an_object(gcs_root):
    model_dir = storage.join(gcs_root, "model")
    with lock.hold(model_dir):
        assert storage.is_file(storage.join(model_dir, lock.LOCK))
    assert not storage.exists(storage.join(model_dir, lock.LOCK))
