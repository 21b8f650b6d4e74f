"""`python -m pipeline`: see pipeline/run.py. Runs in the pipeline environment only."""

from common import console, environments, process

# Before anything imports Beam or TensorFlow: one line naming the right environment.
environments.require(environments.PIPELINE, "python -m pipeline")
console.start()
process.handle_stops()

try:
    with process.imports_without_gc():
        from pipeline.run import main
except KeyboardInterrupt:  # Ctrl-C or SIGTERM during the imports
    process.exit_interrupted()

if __name__ == "__main__":
    process.run_main(main)
