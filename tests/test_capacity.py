"""The TPU capacity plan: hand-computed sizes, slices, the fit option, and the trainer's refusal."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest

from common.config import parse_config
from common.plan import EmbeddingPlan, FeaturePlan, TablePlan, read_plan, write_plan
from embedding import capacity
from embedding.capacity import CapacityError, coverage_at, fit_to_slice, tpu_slice
from embedding.planner import add_capacity, format_plan, make_plan

GIB = 2**30


def one_table_plan(rows, dimension, source="config", sequence_length=0):
    """A plan with one table `items` of `rows` buckets (one OOV), looked up by one feature."""
    kind = "sequence" if sequence_length else "categorical"
    name = "history" if sequence_length else "item_id"
    return EmbeddingPlan(
        tables={"items": TablePlan("items", [name], rows, dimension, "mean", rows - 1, 1, source)},
        features={name: FeaturePlan(name, "items", kind, max_sequence_length=sequence_length)},
        dropped={},
        numeric_features=[],
        label={"name": "clicked", "type": "binary"},
        length_coverage=0.95,
        notes=[],
    )


def by_slice(report):
    return {s["tpu_type"]: s for s in report["slices"]}


def test_hundred_million_rows_at_64_with_adagrad_is_51_2_gb_and_fits_v3_8_not_v2_8():
    report = capacity.capacity(one_table_plan(100_000_000, 64), "adagrad", batch_size=4096)
    table = report["tables"]["items"]
    # 100,000,000 x 64 x 4 bytes = 25.6 GB of weights, the same again of Adagrad accumulator.
    assert table["weight_bytes"] == 25_600_000_000
    assert table["slot_bytes"] == 25_600_000_000
    assert table["total_bytes"] == 51_200_000_000
    slices = by_slice(report)
    # v2-8: 8 cores of 8 GiB; 51.2 GB / 8 = 6.4 GB a core = 74.5% of 8 GiB, over the 70% left.
    assert slices["v2-8"]["table_bytes_per_core"] == 6_400_000_000
    assert slices["v2-8"]["share"] == pytest.approx((6.4e9 + 2 * 512 * 64 * 4) / (8 * GIB))
    assert not slices["v2-8"]["fits"]
    # v3-8: 8 cores of 16 GiB, 37% each; v4-8: 4 megacore chips of 32 GiB, 12.8 GB each.
    assert slices["v3-8"]["fits"] and slices["v3-8"]["hbm_per_core"] == 16 * GIB
    assert slices["v4-8"]["table_bytes_per_core"] == 12_800_000_000 and slices["v4-8"]["fits"]
    assert slices["v2-32"]["table_bytes_per_core"] == 1_600_000_000 and slices["v2-32"]["fits"]
    assert report["smallest_fit"] == "v3-8"
    assert capacity.smallest_fit_in(report, "v2") == "v2-32"


@pytest.mark.parametrize(
    "optimizer, slot_bytes, smallest", [("sgd", 0, "v2-8"), ("adam", 51_200_000_000, "v3-8")]
)
def test_slot_tables_per_optimizer(optimizer, slot_bytes, smallest):
    # SGD keeps no slot (25.6 GB, 3.2 GB a v2 core: fits); Adam keeps m and v (76.8 GB).
    report = capacity.capacity(one_table_plan(100_000_000, 64), optimizer)
    assert report["tables"]["items"]["slot_bytes"] == slot_bytes
    assert report["smallest_fit"] == smallest


def test_div_sharding_puts_the_remainder_rows_on_the_first_cores():
    # 10 rows over 8 cores: cores 0 and 1 hold 2 rows; the fullest decides.
    plan = one_table_plan(10, 8)
    report = capacity.capacity(plan, "sgd", batch_size=8)
    assert by_slice(report)["v2-8"]["table_bytes_per_core"] == 2 * 8 * 4


def test_slices_cores_hosts_and_hbm_as_tpuestimator_sees_them():
    v2, v3, v4 = tpu_slice("v2-8"), tpu_slice("v3-32"), tpu_slice("v4-32")
    assert (v2.cores, v2.hosts, v2.hbm_per_core) == (8, 1, 8 * GIB)
    assert (v3.chips, v3.cores, v3.hosts, v3.hbm_per_core) == (16, 32, 4, 16 * GIB)
    # v4-32: 32 TensorCores = 16 chips, each one megacore device of 32 GiB, 4 hosts.
    assert (v4.chips, v4.cores, v4.hosts, v4.hbm_per_core) == (16, 16, 4, 32 * GIB)
    order = [s.name for s in capacity.all_slices()][:5]
    assert order == ["v2-8", "v3-8", "v4-8", "v4-16", "v2-32"]


@pytest.mark.parametrize("name", ["v5p-8", "v3-16", "v2-1024", "tpu"])
def test_unknown_tpu_type_is_refused_with_the_known_ones(name):
    with pytest.raises(CapacityError, match=r"--tpu-type .* use one of: v2-8, .*v3-8"):
        tpu_slice(name)


def test_activation_bytes_of_a_sequence_and_pooled():
    plan = one_table_plan(5_000, 48, sequence_length=62)
    report = capacity.capacity(plan, "adagrad", batch_size=4096)
    history = report["activations"]["history"]
    assert history["sequence_bytes"] == 4096 * 62 * 48 * 4
    assert history["pooled_bytes"] == 4096 * 48 * 4
    # Per core: its 512 examples' activations and their gradients.
    assert by_slice(report)["v3-8"]["activation_bytes_per_core"] == 2 * 512 * 62 * 48 * 4


def _split_key_plan():
    """items (item_id, history at L = 62) and the split key user_id's own table."""
    return EmbeddingPlan(
        tables={
            "items": TablePlan(
                "items", ["history", "item_id"], 5_000, 48, "mean", 4_999, 1, "auto"
            ),
            "user_id": TablePlan("user_id", ["user_id"], 800, 32, "mean", 799, 1, "auto"),
        },
        features={
            "history": FeaturePlan("history", "items", "sequence", max_sequence_length=62),
            "item_id": FeaturePlan("item_id", "items", "categorical"),
            "user_id": FeaturePlan("user_id", "user_id", "categorical"),
        },
        dropped={},
        numeric_features=[],
        label={"name": "clicked", "type": "binary"},
        length_coverage=0.95,
        notes=[],
    )


@pytest.mark.parametrize("pool_sequences", [True, False])
def test_the_capacity_is_the_trainers_model_not_the_plan_as_it_is(pool_sequences):
    # The trainer builds a bias table beside each categorical table, reads the split key
    # through its bias only (no user_id embedding), and pools the history in the lookup
    # unless --history-attention.
    plan = _split_key_plan()
    model = capacity.ModelShape.of(plan, "user_id", pool_sequences=pool_sequences)
    assert model.key_features == ("user_id",)
    report = capacity.capacity(plan, "sgd", batch_size=4096, model=model)
    assert {n: (t["rows"], t["dimension"]) for n, t in report["tables"].items()} == {
        "items": (5_000, 48),
        "items__bias": (5_000, 1),
        "user_id__bias": (800, 1),
    }
    history = 1 if pool_sequences else 62
    per_core = 512  # 4,096 over a v3-8's 8 cores
    # history and item_id at 48 wide, the two bias lookups at 1; and their gradients.
    expected = 2 * per_core * (history * 48 + 48 + 1 + 1) * 4
    assert by_slice(report)["v3-8"]["activation_bytes_per_core"] == expected
    assert report["model"]["pool_sequences"] is pool_sequences
    assert "user_id" not in report["activations"]
    # --no-key-term: the plan less the split key (trainer.prepare.without_split_key).
    assert capacity.ModelShape.of(plan, "user_id", key_term=False).key_features == ()


def test_the_trainer_checks_the_fit_of_the_model_its_flags_build():
    import argparse

    from trainer.tpu_setup import capacity_refusal

    plan = _split_key_plan()
    config = parse_config(
        {
            "split": {"key": "user_id"},
            "label": {"name": "clicked"},
            "feature": [
                {"name": "item_id", "type": "categorical", "vocabulary": "items"},
                {"name": "history", "type": "sequence", "vocabulary": "items"},
                {"name": "user_id", "type": "categorical"},
            ],
        }
    )
    flags = dict(use_tpu=True, tpu_type="v2-8", batch_size=2_400_000, key_term=True, id_bias=True)
    # 300,000 rows a core. Pooled: 2 x 300,000 x (48 + 48 + 1 + 1) x 4 = 235 MB a core, it
    # fits; looked up as sequences (--history-attention), 7.26 GB, over the 6.01 GB usable.
    pooled = argparse.Namespace(**flags, history_attention=False)
    assert capacity_refusal(pooled, config, plan) is None
    attention = argparse.Namespace(**flags, history_attention=True)
    assert "do not fit a v2-8" in capacity_refusal(attention, config, plan)
    assert "7.26 GB of activations" in capacity_refusal(attention, config, plan)


def test_coverage_read_between_measured_points_on_the_straight_line():
    curve = {"1": 0.1, "2": 0.18, "4": 0.3, "8": 0.5, "10": 1.0}
    assert coverage_at(curve, 6) == pytest.approx(0.4)
    assert coverage_at(curve, 9) == pytest.approx(0.75)
    assert coverage_at(curve, 10) == 1.0
    assert coverage_at(curve, 50) == 1.0
    assert coverage_at(curve, 0) == 0.0


def stats_for(entries):
    # A Zipf-like curve measured at powers of two up to the distinct values.
    curve, k = {}, 1
    while k < entries:
        curve[str(k)] = min(1.0, 0.1 + 0.9 * (k / entries) ** 0.3)
        k *= 2
    curve[str(entries)] = 1.0
    return {"vocabularies": {"items": {"coverage": curve}}}


def test_fit_lowers_top_k_of_a_shrinkable_vocabulary_just_enough():
    plan = one_table_plan(100_000_000, 64)
    stats = stats_for(99_999_999)
    shrunk, changes, fits = fit_to_slice(plan, stats, ["items"], "adagrad", "v2-8", 4096)
    assert fits
    (change,) = changes
    assert change.what == "top_k" and change.before == 99_999_999
    after = change.after
    assert shrunk.tables["items"].vocabulary_size == after + 1
    # Just enough: 1% more entries would not fit.
    bigger = one_table_plan(int((after + 1) * 1.01), 64)
    assert capacity.refusal(bigger, "adagrad", "v2-8", 4096) is not None
    assert capacity.refusal(shrunk, "adagrad", "v2-8", 4096) is None
    assert change.coverage_before == pytest.approx(1.0)
    assert change.coverage_after == pytest.approx(
        coverage_at(stats_for(99_999_999)["vocabularies"]["items"]["coverage"], after)
    )
    assert change.coverage_after < 1.0


def test_fit_scales_auto_dimensions_in_multiples_of_8_when_no_vocabulary_may_shrink():
    plan = one_table_plan(100_000_000, 64, source="auto")
    shrunk, changes, fits = fit_to_slice(plan, stats_for(99_999_999), [], "adagrad", "v2-8")
    assert fits
    assert [(c.what, c.before) for c in changes] == [("dimension", 64)]
    assert shrunk.tables["items"].dimension % 8 == 0
    assert shrunk.tables["items"].dimension == 56  # 56 fits (65% of HBM), 64 did not


def test_fit_changes_nothing_the_config_fixed():
    plan = one_table_plan(100_000_000, 64, source="config")
    shrunk, changes, fits = fit_to_slice(plan, stats_for(99_999_999), [], "adagrad", "v2-8")
    assert not fits and changes == []
    assert shrunk.tables == plan.tables


def test_refusal_names_the_numbers_and_the_smallest_slice():
    message = capacity.refusal(one_table_plan(100_000_000, 64), "adagrad", "v2-8", 4096)
    for part in (
        "v2-8",
        "8 TPU cores of 8 GiB",
        "6.40 GB of tables",
        "74.5%",
        "51.20 GB",
        "25.60 GB of weights",
        "smallest slice that would fit is v3-8",
        "(v2-32 in v2)",
        "shrinkable = true",
        "--fit",
    ):
        assert part in message
    assert capacity.refusal(one_table_plan(100_000_000, 64), "adagrad", "v3-8", 4096) is None


def planner_config(shrinkable=False):
    return parse_config(
        {
            "split": {"key": "user_id"},
            "label": {"name": "clicked"},
            "feature": [
                {"name": "item_id", "type": "categorical", "vocabulary": "items"},
                {"name": "history", "type": "sequence", "vocabulary": "items"},
            ],
            "vocabulary": {"items": {"shrinkable": shrinkable}},
        }
    )


def planner_stats(entries):
    return {
        "rows": {"read": 100, "train": 100, "eval": 0, "rejected": 0},
        "vocabularies": {
            "items": {
                "features": ["history", "item_id"],
                "size": entries,
                "num_oov_buckets": 1,
                "distinct_values": entries,
                "tokens": 10 * entries,
                "oov_rate": 0.0,
                "coverage": stats_for(entries)["vocabularies"]["items"]["coverage"],
            }
        },
        "sequences": {"history": {"histogram": {"5": 95, "40": 5}, "max": 40}},
    }


def test_plan_json_and_printed_table_carry_the_capacity():
    stats, config = planner_stats(99_999_999), planner_config()
    plan = add_capacity(make_plan(stats, config, dimension=64), stats, config, tpu_type="v2-8")
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["capacity"]["tables"]["items"]["total_bytes"] == 51_200_000_000
    assert data["capacity"]["activations"]["history"]["sequence_bytes"] == 4096 * 5 * 64 * 4
    assert data["capacity"]["smallest_fit"] == "v3-8"
    assert data["capacity"]["target"]["fits"] is False
    assert EmbeddingPlan.from_dict(data).capacity == data["capacity"]
    text = format_plan(plan)
    assert "100,000,000 x 64" in text and "51.20 GB" in text
    assert "Smallest slice that fits: v3-8" in text
    assert "--tpu-type v2-8: does NOT fit" in text


def test_planner_fit_prints_the_top_k_to_set_and_its_coverage():
    stats, config = planner_stats(99_999_999), planner_config(shrinkable=True)
    plan = make_plan(stats, config, dimension=64)
    fitted = add_capacity(plan, stats, config, tpu_type="v2-8", fit=True)
    fit = fitted.capacity["fit"]
    assert fit["fits"] and fit["changes"][0]["what"] == "top_k"
    # The transformed data still holds the measured vocabulary: the plan keeps its size.
    assert fitted.tables["items"].vocabulary_size == 100_000_000
    assert f"set [vocabulary.items] top_k = {fit['changes'][0]['after']}" in format_plan(fitted)


def test_cli_fit_needs_a_tpu_type(capsys):
    from embedding.cli import main

    with pytest.raises(SystemExit):
        main(["--pipeline-output", "/nonexistent", "--fit"])
    assert "--fit needs --tpu-type" in capsys.readouterr().err


@pytest.mark.trainer_env
def test_api_client_the_trainer_asks_for_the_tpu_type_still_has_accelerator_type():
    # The one private API the trainer uses: fails here if a TensorFlow upgrade drops it.
    from tensorflow.python.tpu.client import client

    from trainer.tpu_setup import tpu_type_from_api

    assert callable(client.Client.accelerator_type)
    assert tpu_type_from_api("local", None, None) is None


@pytest.fixture
def enlarged_output(small_pipeline_output, tmp_path):
    """A copy of the small pipeline output whose plan has a 100,000,000-row items table."""
    output = str(tmp_path / "pipeline")
    shutil.copytree(small_pipeline_output["output"], output)
    plan = read_plan(output)
    items = plan.tables["items"]
    items.vocabulary_size, items.entries, items.dimension = 100_000_000, 99_999_999, 64
    write_plan(output, plan)
    return output


class ReachedTPU(Exception):
    """Raised where the trainer starts TPU work (it builds the TPU cluster resolver)."""


@pytest.fixture
def unreachable_tpu(monkeypatch):
    """A TPU resolver that raises ReachedTPU: a test sees whether the trainer reached for one."""
    import tensorflow as tf

    def no_tpu(*args, **kwargs):
        raise ReachedTPU

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", no_tpu)


def _trainer_argv(output, model_dir, tpu_type):
    return [
        "--pipeline-output",
        output,
        "--model-dir",
        model_dir,
        "--train-steps",
        "1",
        "--batch-size",
        "64",
        "--use-tpu",
        "--tpu",
        "my-tpu",
        "--eval-steps",
        "1",
        "--tpu-type",
        tpu_type,
    ]


@pytest.mark.trainer_env
@pytest.mark.slow
def test_trainer_refuses_a_plan_too_large_for_v2_8_before_tpu_work(
    enlarged_output, tmp_path, unreachable_tpu, caplog
):
    from trainer import task

    model_dir = str(tmp_path / "model")
    with caplog.at_level(logging.ERROR, logger="trainer"):
        assert task.main(_trainer_argv(enlarged_output, model_dir, "v2-8")) == 2
    message = caplog.text
    assert "do not fit a v2-8" in message
    assert "100,000,000 x 64 = 25.60 GB of weights + 25.60 GB of adagrad slots" in message
    assert "smallest slice that would fit is v3-8" in message
    assert not os.path.exists(model_dir)  # refused before anything was written


@pytest.mark.trainer_env
@pytest.mark.slow
def test_trainer_passes_the_check_on_v3_8_and_goes_on_to_the_tpu(
    enlarged_output, tmp_path, monkeypatch
):
    import tensorflow as tf

    from trainer import prepare, task

    reached = []

    def tpu_reached(*args, **kwargs):
        reached.append(args)
        raise ReachedTPU

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", tpu_reached)
    # The enlarged table exists in the plan only; the vocabulary check (after the capacity
    # gate) would refuse it, which is not what this test is about.
    monkeypatch.setattr(prepare, "check_vocabularies", lambda plan, transform_output: None)
    # Past the capacity gate the trainer asks for the TPU; here none answers, which is one
    # line naming it.
    assert task.main(_trainer_argv(enlarged_output, str(tmp_path / "model"), "v3-8")) == 2
    assert reached


@pytest.mark.slow
def test_planner_cli_writes_capacity_into_plan_and_report(small_pipeline_output, tmp_path, capsys):
    from embedding.cli import DOES_NOT_FIT, main

    output = str(tmp_path / "pipeline")
    shutil.copytree(small_pipeline_output["output"], output)
    assert main(["--pipeline-output", output, "--tpu-type", "v2-8"]) == 0
    assert "--tpu-type v2-8: fits" in capsys.readouterr().out
    plan = read_plan(output)
    items = plan.tables["items"]
    assert plan.capacity["tables"]["items"]["total_bytes"] == 2 * items.vocabulary_size * (
        items.dimension * 4
    )
    report = open(os.path.join(output, "report.html")).read()
    assert "<h2>TPU capacity (embedding plan)</h2>" in report
    assert f"<td>items</td><td>{items.vocabulary_size:,}</td><td>{items.dimension}</td>" in report
    assert "Smallest slice that fits: v2-8." in report
    # At a global batch of 100 million the activations overflow a v2-8 core.
    argv = ["--pipeline-output", output, "--tpu-type", "v2-8", "--batch-size", "100000000"]
    assert main(argv) == DOES_NOT_FIT
    assert "does NOT fit" in capsys.readouterr().out
    # The report marks the plan's length, which --length-coverage changed, not the config's.
    assert main(["--pipeline-output", output, "--length-coverage", "0.5"]) == 0
    length = read_plan(output).features["history"].max_sequence_length
    default = plan.features["history"].max_sequence_length
    assert length < default
    report = open(os.path.join(output, "report.html")).read()
    assert f"At max_sequence_length {length}:" in report
    assert f"At max_sequence_length {default}:" not in report


def test_the_fit_says_what_the_vocabulary_covers_now_exactly():
    # The coverage curve is measured at powers of two and read in between on a straight
    # line; the vocabulary as it is covers exactly the tokens not out of it (stats.json).
    plan = one_table_plan(100_000_000, 64)
    stats = stats_for(99_999_999)
    stats["vocabularies"]["items"]["oov_rate"] = 0.0143
    shrunk, changes, fits = fit_to_slice(plan, stats, ["items"], "adagrad", "v2-8", 4096)
    (change,) = changes
    assert change.coverage_before == pytest.approx(1 - 0.0143)
    assert change.coverage_after <= change.coverage_before


@pytest.mark.trainer_env
def test_a_batch_the_named_tpus_cores_cannot_share_is_refused_before_the_tpu(
    small_pipeline_output, tmp_path, unreachable_tpu, caplog
):
    # --tpu-type names the cores: a batch of 63 over a v2-8's 8 is refused without reaching
    # for the TPU (it said "no TPU found" where none was reachable).
    from trainer import task

    argv = _trainer_argv(small_pipeline_output["output"], str(tmp_path / "model"), "v2-8")
    argv[argv.index("--batch-size") + 1] = "63"
    with caplog.at_level(logging.ERROR, logger="trainer"):
        assert task.main(argv) == 2
    assert "--batch-size 63 cannot be split over the TPU's 8 cores" in caplog.text


@pytest.mark.trainer_env
def test_a_tpu_type_without_use_tpu_is_said_to_check_nothing(small_pipeline_output, caplog):
    from trainer import prepare, task

    args = task.parse_args(
        ["--pipeline-output", small_pipeline_output["output"], "--model-dir", "m"]
        + ["--train-steps", "1", "--tpu-type", "v2-8"]
    )
    with caplog.at_level(logging.WARNING, logger="trainer"):
        prepare.prepare(args)
    assert "--tpu-type v2-8 is for runs with --use-tpu: this run trains on CPU" in caplog.text
