"""How a command stops: a Ctrl-C or SIGTERM whose KeyboardInterrupt Python swallows (raised
inside a finalizer) still stops it, in one line, with exit code 130."""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys, time
from common import process

class Slow:
    def __del__(self):
        print("in a finalizer", flush=True)
        time.sleep(5)

def main():
    process.handle_stops()
    Slow()  # deleted at once: its finalizer runs here, and the stop lands inside it
    process.raise_if_stopped()
    print("went on", flush=True)
    return 0

process.run_main(main)
"""


def test_a_stop_swallowed_by_a_finalizer_still_stops_the_command():
    child = subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout.readline().strip() == "in a finalizer"
    time.sleep(0.2)
    child.terminate()  # SIGTERM
    out, err = child.communicate(timeout=30)
    assert child.returncode == 130, err
    assert "went on" not in out
    assert "Exception ignored" not in err and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "interrupted: stopped before the end"


IMPORTS = """
import gc, sys
from common import process

class Cycle:
    pass

def cycle():
    a = Cycle()
    a.me = a
    return a

before = gc.get_freeze_count()
gc.{state}()
with process.imports_without_gc():
    inside = gc.isenabled()
    kept = cycle()
    import json  # an import in the block
frozen = gc.get_freeze_count() - before
print(inside, gc.isenabled(), frozen >= 1)
del kept
print(gc.collect() == 0)  # the frozen cycle is not collected
unfrozen = cycle()
del unfrozen
print(gc.collect() >= 1)  # a later cycle is
"""


def test_imports_pause_the_collector_freeze_what_they_built_and_restore_it():
    for state, enabled in (("enable", "True"), ("disable", "False")):
        done = subprocess.run(
            [sys.executable, "-c", IMPORTS.format(state=state)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
        )
        assert done.stdout.split() == ["False", enabled, "True", "True", "True"], done.stdout
