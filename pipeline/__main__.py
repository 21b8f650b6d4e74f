"""`python -m pipeline`: see pipeline/run.py."""

import sys

from common import console

console.start()  # before Beam and TensorFlow are imported

from pipeline.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
