"""The run storage refuses to store a run whose config no run could start with
(params.check_run_config): every way a run is made, the CLI's, the launchpad's, GraphQL's, a
schedule's or a sensor's, passes through it, before anything of the run is stored."""

import functools

from ..params import check_run_config


def check_new_runs(run_storage) -> None:
    """Makes `run_storage` check each new run's config before it stores the run."""
    add_run = run_storage.add_run

    @functools.wraps(add_run)
    def checked(dagster_run):
        check_run_config(dagster_run.job_name, dagster_run.run_config)
        return add_run(dagster_run)

    run_storage.add_run = checked
