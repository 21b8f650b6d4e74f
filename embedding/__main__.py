"""`python -m embedding`: see embedding/cli.py."""

import sys

from common import console

console.start()  # before TensorFlow is imported

from embedding.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
