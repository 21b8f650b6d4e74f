"""The Dataflow dry run: build the job Dataflow would receive, measure it, submit nothing.

`python -m pipeline ... --runner DataflowRunner --dry_run True` builds the whole job offline
(no network, no credentials) and prints what a user needs before submitting:

    Dry run: 87 transforms, 412,345 bytes of job description (...)

Beam 2.60's DataflowRunner returns the built, unsubmitted job as `result.job`. Dataflow
receives it in two parts: the job graph, the runner API pipeline that Beam stages as
`pipeline.pb` (Dataflow refuses a graph over 10 MB), and the JSON job request that points to
it (limit 20 MB). The bytes reported are the two together. The request measured lacks the
environment Beam adds when it submits (the pipeline options and the staged packages' names),
which does not depend on the data.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, WorkerOptions

from common.config import Config
from pipeline.graph import build
from pipeline.options import new_pipeline

LOG = logging.getLogger("pipeline")

# Dataflow's limit on a job graph (cloud.google.com/dataflow/docs/request-quotas).
GRAPH_LIMIT_BYTES = 10 << 20


def measure_job(job: Any) -> dict[str, int]:
    """The size of a built Dataflow job (`result.job` of a dry run).

    Returns:
      transforms: the transforms of the runner API pipeline, composites included.
      graph_bytes: the serialized pipeline proto, staged as pipeline.pb.
      request_bytes: the JSON job request as built so far.
      job_bytes: the two together.
    """
    graph = len(job.proto_pipeline.SerializeToString())
    request = len(job.json().encode("utf-8"))
    return {
        "transforms": len(job.proto_pipeline.components.transforms),
        "graph_bytes": graph,
        "request_bytes": request,
        "job_bytes": graph + request,
    }


def workers(options: PipelineOptions) -> dict[str, str | None]:
    """What the job's workers will run: the Beam SDK (the launcher's, which Dataflow's
    default container matches), their Python, and what installs the pipeline's packages."""
    image = options.view_as(WorkerOptions).sdk_container_image
    python = ".".join(map(str, sys.version_info[:2]))
    return {
        "beam_sdk": beam.__version__,
        "worker_python": f"the image's Python (this launcher's is {python})" if image else python,
        "requirements_file": options.view_as(SetupOptions).requirements_file,
        "sdk_container_image": image,
    }


def summary_line(measured: dict[str, Any]) -> str:
    """The line the CLI prints: `Dry run: N transforms, B bytes of job description (...);
    workers run Beam SDK V on Python P with ...; nothing was submitted`."""
    share = measured["graph_bytes"] / GRAPH_LIMIT_BYTES
    if measured.get("sdk_container_image"):
        packages = f"the container image {measured['sdk_container_image']}"
    elif measured.get("requirements_file"):
        packages = f"the requirements file {measured['requirements_file']}"
    else:
        packages = "Beam's default packages only (no requirements file, no container image)"
    return (
        f"Dry run: {measured['transforms']:,} transforms, {measured['job_bytes']:,} bytes of "
        f"job description (the job graph is {share:.1%} of Dataflow's 10 MB limit); workers "
        f"run Beam SDK {measured['beam_sdk']} on Python {measured['worker_python']} with "
        f"{packages}; nothing was submitted"
    )


def dry_run(
    options: PipelineOptions,
    config: Config,
    patterns: Sequence[str],
    header: list[str] | None,
    output: str,
    work_dir: str,
    **build_args: Any,
) -> dict[str, Any]:
    """Builds the job on the DataflowRunner with `--dry_run True`, without running it.

    Args:
      options: the pipeline options, a DataflowRunner and `--dry_run True` among them.
      config, patterns, header, output, work_dir, build_args: as `pipeline.graph.build`
        takes them.

    Returns:
      `measure_job`'s figures, with `dry_run` True, the `job` and the `summary` line.
    """
    p = new_pipeline(options)
    build(p, config, patterns, header, output, work_dir, **build_args)  # writes nothing
    result = p.run()
    measured = {**measure_job(result.job), **workers(result.job.options)}
    LOG.info("Dry run: the job was built and not run; nothing was written to %s", output)
    return {"dry_run": True, "job": result.job, "summary": summary_line(measured), **measured}
