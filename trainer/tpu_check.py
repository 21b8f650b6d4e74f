"""The trainer's TPU capacity gate: refuse tables that cannot fit the TPU, before TPU work.

The arithmetic is `embedding.capacity` (pure, shared with the planner); this module only finds
out which TPU the job targets: `--tpu-type`, or else the accelerator type the Cloud TPU API
reports for `--tpu`.
"""

from __future__ import annotations

import argparse
import logging

from common.config import Config
from common.plan import EmbeddingPlan
from embedding import capacity

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
    try:
        return capacity.refusal(plan, config.embedding.optimizer, tpu_type, args.batch_size)
    except capacity.CapacityError as e:
        return str(e)
