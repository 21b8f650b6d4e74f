"""`python -m embedding`: see embedding/cli.py."""

import sys

from embedding.cli import main

if __name__ == "__main__":
    sys.exit(main())
