"""Beam's pipeline options, each view made once.

Beam asks the options for a view (`options.view_as(TypeOptions)`) every time a transform is
applied and every time it checks a type hint, thousands of times while the graph is built
and translated, and each view parses the command line again with a parser of every option
Beam knows. A view holds no state of its own: it reads and writes the options' one dict of
values, and the flags it parses do not change. So one view of each kind, kept, is the same
view, and the graph is built without re-parsing the flags thousands of times.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions


class Options(PipelineOptions):
    """`PipelineOptions` whose `view_as` returns one view per options class."""

    def view_as(self, cls):
        views = self.__dict__.get("_views")
        if views is None:
            views = {}
            object.__setattr__(self, "_views", views)
        view = views.get(cls)
        if view is None:
            view = views[cls] = super().view_as(cls)
        return view

    def __getstate__(self):
        # The views are remade where the options are unpickled; pickled, they would also
        # carry values that Beam's own hook leaves out of the pickled options.
        state = dict(super().__getstate__())
        state.pop("_views", None)
        return state


def check_cloud_locations(options: PipelineOptions) -> None:
    """Refuses a --temp_location or --staging_location that Beam's validator would refuse,
    and a dry run without either, as InputError.

    Where neither is a valid gs:// path, Beam falls back to a default bucket of the project,
    which it looks up (or creates) over the network: a typo in the one the user gave would
    send the job's files elsewhere, after a warning this command's quiet logs do not show, and
    a dry run, which is offline, would wait on the network for minutes.
    """
    from apache_beam.options.pipeline_options import (
        GoogleCloudOptions,
        StandardOptions,
        TestOptions,
    )
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator

    from pipeline.input_files import InputError

    if "Dataflow" not in str(options.view_as(StandardOptions).runner):
        return
    cloud = options.view_as(GoogleCloudOptions)
    validator = PipelineOptionsValidator(options, None)
    given = [name for name in ("temp_location", "staging_location") if getattr(cloud, name)]
    errors = [error for name in given for error in validator.validate_gcs_path(cloud, name)]
    if errors:
        raise InputError("the pipeline options are not valid: " + "; ".join(errors))
    if not given and options.view_as(TestOptions).dry_run:
        raise InputError(
            "a Dataflow dry run needs --temp_location gs://BUCKET/PATH (without it Beam looks "
            "up a default bucket over the network)"
        )


def new_pipeline(options: PipelineOptions, runner=None):
    """`beam.Pipeline(runner, options)`; options Beam's validator refuses (a project id or a
    bucket name Cloud does not allow) raise InputError naming each, instead of Beam's
    ValueError."""
    import apache_beam as beam

    from pipeline.input_files import InputError

    check_cloud_locations(options)
    try:
        return beam.Pipeline(runner=runner, options=options)
    except ValueError as e:
        errors = str(e).split("Pipeline has validations errors:", 1)
        if len(errors) < 2:
            raise
        reasons = "; ".join(line.strip() for line in errors[1].splitlines() if line.strip())
        raise InputError(f"the pipeline options are not valid: {reasons}") from None
