"""The runner of a run that names no `--runner`: Beam's FnApiRunner, in this process.

Beam's DirectRunner runs a batch pipeline like ours on the FnApiRunner. From Beam 2.6x on
it first tries the Prism runner, a Go binary that it downloads at run time: offline that
costs seconds of building and translating the job again before it falls back, and online
it would run the pipeline on a runner fetched at run time. The pipeline asks for the
FnApiRunner itself, configured as the DirectRunner configures it, so `--direct_num_workers`
and `--direct_running_mode` work as before. A `--runner` given on the command line is used
as given.
"""

from __future__ import annotations

import os
import sys

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions


def default_runner(options: PipelineOptions):
    """The FnApiRunner when `options` name no runner, else None (Beam uses the named one)."""
    if options.view_as(StandardOptions).runner is not None:
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    # As the DirectRunner does: the workers (separate processes with
    # --direct_running_mode multi_processing) get the run's options.
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return _quiet_workers_runner()(
        provision_info=fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
        )
    )


def _quiet_workers_runner():
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.transforms import environments

    class QuietWorkersRunner(fn_runner.FnApiRunner):
        """The FnApiRunner, whose worker processes (--direct_running_mode multi_processing)
        run `pipeline.worker` instead of Beam's own entry point: the same worker, without
        the libraries' import lines. The runner picks its worker command when it runs the
        pipeline, so the choice is made where it stores it."""

        @property
        def _default_environment(self):
            return self._environment

        @_default_environment.setter
        def _default_environment(self, environment):
            command = getattr(environment, "command_string", "")
            if command.endswith("-m apache_beam.runners.worker.sdk_worker_main"):
                from pipeline.worker import PARENT

                os.environ[PARENT] = str(os.getpid())
                environment = environments.SubprocessSDKEnvironment.from_command_string(
                    command_string=f"{sys.executable} -m pipeline.worker"
                )
            self._environment = environment

    return QuietWorkersRunner
