"""`python -m pipeline`: see pipeline/run.py."""

from common import console

console.start()  # before Beam and TensorFlow are imported

from common.process import run_main  # noqa: E402
from pipeline.run import main  # noqa: E402

if __name__ == "__main__":
    run_main(main)
