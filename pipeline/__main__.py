"""`python -m pipeline`: see pipeline/run.py. Runs in the pipeline environment only."""

from common import console, environments

# Before anything imports Beam or TensorFlow: one line naming the right environment.
environments.require(environments.PIPELINE, "python -m pipeline")
console.start()

from common.process import run_main  # noqa: E402
from pipeline.run import main  # noqa: E402

if __name__ == "__main__":
    run_main(main)
