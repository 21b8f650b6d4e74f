"""`python -m pipeline`: see pipeline/run.py. Runs in the pipeline environment only."""

import sys

from common import environments

if __name__ == "__main__":
    # Before anything imports Beam or TensorFlow: one line naming the right environment.
    environments.require(environments.PIPELINE, "python -m pipeline")
    from pipeline.run import main

    sys.exit(main())
