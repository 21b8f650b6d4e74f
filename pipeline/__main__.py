"""`python -m pipeline`: see pipeline/run.py."""

import sys

from pipeline.run import main

if __name__ == "__main__":
    sys.exit(main())
