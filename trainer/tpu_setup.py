"""The TPU the job runs on: its resolver, its topology, and the checks that refuse a job it
cannot run, before any TPU work.

`--tpu` names the TPU; its hosts and cores come from the TPU itself (`tpu_topology`), its type
from `--tpu-type` or else the Cloud TPU API. The arithmetic of whether the tables fit is
`embedding.capacity` (pure, shared with the planner); `capacity_refusal` only finds out which
TPU the job targets and asks it.
"""

from __future__ import annotations

import argparse
import logging

from common.config import Config
from common.plan import EmbeddingPlan
from embedding import capacity
from trainer.checks import TrainerError

LOG = logging.getLogger("trainer")


def tpu_type_from_api(tpu: str | None, zone: str | None, project: str | None) -> str | None:
    """The accelerator type ("v3-8") the Cloud TPU API reports for a named TPU, or None.

    TensorFlow's Cloud TPU client (`tensorflow.python.tpu.client.client.Client`, which
    `TPUClusterResolver` itself uses) has `accelerator_type()`; it is not public API, so it is
    used here only, and a test fails if an upgrade removes it. A TPU VM's own TPU (`local`)
    and a grpc:// address are not looked up: the API is not asked about them.
    """
    if not tpu or tpu == "local" or tpu.startswith("grpc://"):
        return None
    try:
        from tensorflow.python.tpu.client import client

        return client.Client(tpu=tpu, zone=zone, project=project).accelerator_type() or None
    except Exception as e:  # noqa: BLE001 (any failure only means the type is unknown)
        LOG.warning("Could not read the accelerator type of TPU %r from the API: %s", tpu, e)
        return None


def capacity_refusal(args: argparse.Namespace, config: Config, plan: EmbeddingPlan) -> str | None:
    """Why the plan's tables cannot train on the job's TPU, with the numbers; None if they can.

    Nothing is checked without `--use-tpu`. Without `--tpu-type` the type is asked from the
    Cloud TPU API; when that gives nothing, a warning says the check was skipped.

    Args:
      args: the trainer's flags (`use_tpu`, `tpu_type`, `tpu`, `tpu_zone`, `gcp_project`,
        `batch_size`).
      config: the pipeline's config (`[embedding] optimizer`).
      plan: the embedding plan.
    """
    if not args.use_tpu:
        return None
    tpu_type = args.tpu_type or tpu_type_from_api(args.tpu, args.tpu_zone, args.gcp_project)
    if not tpu_type:
        LOG.warning(
            "TPU type unknown, so whether the embedding tables fit was not checked; pass "
            "--tpu-type (v2-8, v3-8, v4-8, ...) to check before the TPU starts"
        )
        return None
    model = capacity.ModelShape.of(
        plan,
        config.split.key,
        key_term=args.key_term,
        pool_sequences=not args.history_attention,
        id_bias=args.id_bias,
    )
    try:
        return capacity.refusal(
            plan, config.embedding.optimizer, tpu_type, args.batch_size, model=model
        )
    except capacity.CapacityError as e:
        return str(e)


def tpu_cluster(args: argparse.Namespace):
    """The resolver of the TPU named by --tpu, --tpu-zone and --gcp-project."""
    import tensorflow as tf

    try:
        return tf.distribute.cluster_resolver.TPUClusterResolver(
            args.tpu, zone=args.tpu_zone, project=args.gcp_project
        )
    except Exception as e:  # credentials, the Cloud TPU API, the network: each its own type
        raise TrainerError(unreachable(args.tpu, e)) from None


def unreachable(tpu: str | None, error: Exception) -> str:
    """One line: the TPU named by --tpu cannot be reached, and why."""
    why = (str(error).splitlines() or [type(error).__name__])[0][:300]
    return (
        f"TPU {tpu!r} cannot be reached ({type(error).__name__}: {why}); check --tpu, "
        "--tpu-zone, --gcp-project and the credentials (on a TPU VM they come with the VM), or "
        "train on CPU without --use-tpu"
    )


def tpu_topology(cluster) -> tuple[int, int]:
    """(hosts, cores) of the TPU behind `cluster`, asked as TPUEstimator asks it.

    TensorFlow has no public call for this in graph mode: TPUEstimator itself calls
    `tpu_system_metadata._query_tpu_system_metadata`, so this does too, which keeps our
    checks and TPUEstimator's graph on the same answer (tests/test_tpu_graph.py fakes it).
    """
    from tensorflow.python.tpu import tpu_system_metadata

    try:
        spec = cluster.cluster_spec()
        metadata = tpu_system_metadata._query_tpu_system_metadata(
            cluster.master(), cluster_def=spec.as_cluster_def() if spec.jobs else None
        )
    except Exception as e:  # a TPU that does not answer: the session's own error types
        raise TrainerError(unreachable(cluster.master() or None, e)) from None
    if not metadata.num_cores or not metadata.num_hosts:
        raise TrainerError(
            f"no TPU found at {cluster.master() or '(no address)'}: it reports "
            f"{metadata.num_cores} cores on {metadata.num_hosts} hosts; check --tpu (and "
            "--tpu-zone, --gcp-project), or train on CPU without --use-tpu"
        )
    return metadata.num_hosts, metadata.num_cores


def check_tpu_batch(batch_size: int, cores: int, hosts: int) -> None:
    """Refuses a global batch the TPU's cores cannot share equally.

    Under PER_HOST_V2 every core trains on batch_size / cores examples a step.

    Raises:
      TrainerError: batch_size is not a multiple of cores.
    """
    if batch_size % cores:
        lower = batch_size // cores * cores
        raise TrainerError(
            f"--batch-size {batch_size} cannot be split over the TPU's {cores} cores "
            f"({hosts} host(s)): each core takes batch-size / {cores} examples a step; use a "
            f"multiple of {cores}, e.g. {lower or cores} or {lower + cores}"
        )
