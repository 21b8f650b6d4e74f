"""The trainer's command line: its flags, their defaults and the checks of their values.

`python -m trainer.task --help` lists them; `trainer.task` runs what they ask for.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

from common import console, environments

EVALUATIONS = 5
"""Evaluations on the validation split over a run, by default: the checkpoint chosen is at
most a fifth of the run from the best one, for about a tenth more time on the ratings data."""


def resolve_length(args: argparse.Namespace, train_rows: int, has_validation: bool) -> None:
    """Sets `args.train_steps` from --train-epochs and the train split's rows, and
    `args.eval_every_steps` from its default (EVALUATIONS evaluations over the run with a
    validation split, none without; 0: none). The resolved values are the ones written to
    training_config.json."""
    if args.train_epochs is not None:
        args.train_steps = max(1, math.ceil(args.train_epochs * train_rows / args.batch_size))
    if args.eval_every_steps is None and has_validation:
        args.eval_every_steps = max(1, math.ceil(args.train_steps / EVALUATIONS))
    if not args.eval_every_steps:
        args.eval_every_steps = None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The trainer's flags, checked (a bad value exits with argparse's usage error).

    Args:
      argv: the arguments after the program name (None: `sys.argv[1:]`).
    """
    parser = argparse.ArgumentParser(
        prog="python -m trainer.task",
        description="Train TPUEstimator on the pipeline's output, on a Cloud TPU or on CPU.",
    )
    parser.add_argument("--pipeline-output", required=True, help="the pipeline's OUTPUT")
    parser.add_argument("--model-dir", required=True, help="checkpoints and exports (or gs://)")
    length = parser.add_mutually_exclusive_group(required=True)
    length.add_argument("--train-steps", type=int, help="total training steps")
    length.add_argument(
        "--train-epochs",
        type=float,
        help="total training in passes over the train split: the steps are epochs x "
        "stats.json's train rows / --batch-size, rounded up",
    )
    parser.add_argument(
        "--eval-steps",
        type=int,
        default=None,
        help="evaluation batches (default: the whole eval split)",
    )
    parser.add_argument(
        "--eval-every-steps",
        type=int,
        default=None,
        help="also evaluate every N steps during training: on the validation split, which "
        "selects the checkpoint that is exported and reported, or on eval for the curves "
        f"only when the pipeline output has no validation split (default: {EVALUATIONS} "
        "evaluations over the run when there is a validation split, none without; 0: none)",
    )
    parser.add_argument(
        "--require-beats-baseline",
        action="store_true",
        help="exit with status 3, after writing everything, when the chosen model scores "
        "below the best single-feature baseline (judged on validation, else on eval)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=256,
        help="global batch size; on a TPU a multiple of its number of cores (each core "
        "trains on batch-size / cores examples a step)",
    )
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--optimizer", choices=("adagrad", "adam", "sgd"), default="adagrad")
    parser.add_argument(
        "--embedding-learning-rate",
        type=float,
        default=None,
        help="the embedding tables' learning rate, set apart from the dense layers' "
        "--learning-rate (default: the config's [embedding] learning_rate)",
    )
    parser.add_argument("--hidden-units", default="128,64", help="DNN layer sizes, comma separated")
    parser.add_argument(
        "--id-bias",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a per-id bias (a dimension-1 table) of every categorical feature added to the "
        "logit: the linear part of the model (default: on)",
    )
    parser.add_argument(
        "--id-bias-scale",
        type=float,
        default=10.0,
        help="factor on the per-id bias in the logit: under Adagrad or Adam the bias learns "
        "about this many times faster than the embedding rate (default: 10)",
    )
    parser.add_argument(
        "--id-bias-decay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the per-id bias tables' learning rate falls from the embedding rate to 0 over "
        "--train-steps (cosine): the fast-learning bias settles instead of following the last "
        "batches' noise (default: on)",
    )
    parser.add_argument(
        "--embedding-l2",
        type=float,
        default=0.0,
        help="weight of an L2 penalty on the embedding vectors and biases each batch looks "
        "up (0: none)",
    )
    parser.add_argument(
        "--cross-layers",
        type=int,
        default=2,
        help="DCN-v2 cross layers between the features and the DNN (default: 2; 0: none)",
    )
    parser.add_argument(
        "--history-attention",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the candidate's attention over the history positions (DIN-style) as well as "
        "the history's mean (default: off)",
    )
    parser.add_argument(
        "--oov-train-share",
        type=float,
        default=0.02,
        help="share of the categorical ids replaced by the OOV bucket in training, so the OOV "
        "row that unseen ids read is trained (0 turns it off)",
    )
    parser.add_argument(
        "--bias-init",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start the per-id bias tables at each id's smoothed log-odds on the training "
        "split and the output at the prior, where counting ends (default: on)",
    )
    parser.add_argument(
        "--key-term",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a split key listed as a categorical feature (user_id) gets a per-id bias only, "
        "no embedding: it absorbs each training key's own effect; --no-key-term leaves it "
        "out of the model (default: on)",
    )
    parser.add_argument(
        "--history-dropout",
        type=float,
        default=0.0,
        help="training only: share of each sequence's ids left out, a new draw each time a "
        "row is read, so that a long history cannot identify its user (0: none)",
    )
    parser.add_argument("--use-tpu", action="store_true", help="train on a Cloud TPU")
    parser.add_argument("--tpu", default=None, help="the TPU name (or grpc:// address)")
    parser.add_argument(
        "--tpu-type",
        default=None,
        help="the TPU's type (v2-8, v3-8, v4-8, v3-32, ...): refuse tables that cannot fit it "
        "before any TPU work (default: the type the Cloud TPU API reports for --tpu)",
    )
    parser.add_argument("--tpu-zone", default=None)
    parser.add_argument("--gcp-project", default=None)
    parser.add_argument("--iterations-per-loop", type=int, default=100)
    parser.add_argument("--save-checkpoints-steps", type=int, default=1000)
    parser.add_argument(
        "--seed",
        type=int,
        default=42,
        help="initial values, data order and dropout: on CPU the same seed, data and flags "
        "train the same model (default: 42)",
    )
    parser.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="TensorFlow's op determinism, so that the same --seed trains the same model on "
        "CPU (default: on; docs/commit.md gives its cost)",
    )
    parser.add_argument(
        "--break-lock",
        action="store_true",
        help="take MODEL_DIR's lock (trainer.lock) from a trainer that is gone; a lock of a "
        "dead process on this host is broken without it",
    )
    parser.add_argument(
        "--export",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="export a SavedModel that serves raw tf.Examples (default: on)",
    )
    console.add_flags(parser, environments.TRAINER)
    args = parser.parse_args(argv)
    try:
        args.hidden_units = [int(u) for u in args.hidden_units.split(",") if u.strip()]
    except ValueError:
        parser.error(f"--hidden-units must be integers separated by commas: {args.hidden_units}")
    for flag in ("train_steps", "batch_size", "iterations_per_loop", "save_checkpoints_steps"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    if not args.hidden_units or min(args.hidden_units) < 1:
        parser.error(f"--hidden-units must be positive layer sizes, got {args.hidden_units}")
    if args.embedding_learning_rate is not None and not args.embedding_learning_rate > 0:
        parser.error("--embedding-learning-rate must be > 0")
    for flag, low in (("learning_rate", 0.0), ("id_bias_scale", 0.0)):
        if not (math.isfinite(getattr(args, flag)) and getattr(args, flag) > low):
            parser.error(f"--{flag.replace('_', '-')} must be a number > {low:g}")
    if not (math.isfinite(args.embedding_l2) and args.embedding_l2 >= 0):
        parser.error("--embedding-l2 must be a number >= 0")
    if not 0 <= args.seed < 2**32:
        parser.error(f"--seed must be in [0, 2**32), got {args.seed}")
    if args.cross_layers < 0:
        parser.error("--cross-layers must be >= 0")
    if args.train_epochs is not None and args.train_epochs <= 0:
        parser.error(f"--train-epochs must be > 0, got {args.train_epochs}")
    if args.eval_steps is not None and args.require_beats_baseline:
        parser.error(
            "--require-beats-baseline judges whole splits against the baselines: drop --eval-steps"
        )
    if args.eval_steps is not None and args.eval_steps < 1:
        parser.error("--eval-steps must be >= 1")
    if args.eval_every_steps is not None and args.eval_every_steps < 0:
        parser.error("--eval-every-steps must be >= 0 (0: no evaluation during training)")
    if not 0.0 <= args.history_dropout < 1.0:
        parser.error(f"--history-dropout must be in [0, 1), got {args.history_dropout}")
    if not 0.0 <= args.oov_train_share < 1.0:
        parser.error(f"--oov-train-share must be in [0, 1), got {args.oov_train_share}")
    if args.use_tpu and not args.tpu:
        parser.error("--use-tpu needs --tpu NAME")
    return args
