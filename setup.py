"""Packaging shim for Dataflow's `--setup_file ./setup.py`.

Beam builds an sdist of this project with it and installs that on every worker, so the
workers import the same `pipeline`, `embedding` and `trainer` code as the launcher. Metadata
and dependencies live in pyproject.toml.
"""

import setuptools

setuptools.setup()
