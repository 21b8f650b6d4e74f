"""The pipeline's options give the views Beam's own options give, made once each."""

from __future__ import annotations

import pickle

import pytest
from apache_beam.options.pipeline_options import (
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    TypeOptions,
    WorkerOptions,
)

from pipeline.options import Options

pytestmark = pytest.mark.pipeline_env

FLAGS = [
    "--runner",
    "DataflowRunner",
    "--project",
    "p",
    "--region",
    "r",
    "--direct_num_workers",
    "2",
    "--experiments",
    "a",
    "--experiments",
    "b",
    "--unknown_flag",
    "x",
]
VIEWS = (StandardOptions, GoogleCloudOptions, DirectOptions, SetupOptions, TypeOptions)


def test_each_view_is_beams_and_is_made_once():
    ours = Options(FLAGS, save_main_session=False)
    beams = PipelineOptions(FLAGS, save_main_session=False)
    for cls in VIEWS:
        assert ours.view_as(cls) is ours.view_as(cls)
        assert type(ours.view_as(cls)) is cls
        assert ours.view_as(cls).get_all_options() == beams.view_as(cls).get_all_options()
    assert ours.view_as(SetupOptions).save_main_session is False
    assert ours.get_all_options(retain_unknown_options=True) == beams.get_all_options(
        retain_unknown_options=True
    )


def test_a_value_set_through_a_view_is_seen_by_every_view():
    ours = Options(FLAGS)
    ours.view_as(WorkerOptions).num_workers = 7
    ours.view_as(StandardOptions).runner = "DirectRunner"
    assert ours.view_as(WorkerOptions).num_workers == 7
    assert ours.get_all_options()["num_workers"] == 7
    assert ours.view_as(StandardOptions).runner == "DirectRunner"
    assert (
        PipelineOptions.from_dictionary(ours.get_all_options()).view_as(StandardOptions).runner
        == "DirectRunner"
    )


def test_pickled_options_carry_no_views_and_no_impersonation():
    ours = Options([*FLAGS, "--impersonate_service_account", "someone@p.iam"])
    ours.view_as(GoogleCloudOptions)
    state = ours.__getstate__()
    assert "_views" not in state
    assert state["_all_options"]["impersonate_service_account"] is None
    again = pickle.loads(pickle.dumps(ours))
    assert again.view_as(GoogleCloudOptions).project == "p"
    assert again.view_as(GoogleCloudOptions) is again.view_as(GoogleCloudOptions)
    assert again.view_as(GoogleCloudOptions).impersonate_service_account is None
