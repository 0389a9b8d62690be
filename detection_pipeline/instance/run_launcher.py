"""Dagster's default run launcher plus the run worker health check it lacks.

The default launcher starts each run worker as a process of the code server on this machine
but cannot tell whether that process still lives, so Dagster's run monitoring would leave the
run of a `kill -9`-ed worker STARTED for ever, holding the one-run queue. With this check, run
monitoring fails such a run within one poll interval, and the reconciliation sensor brings its
record along.
"""

import time

from dagster import DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun

from .. import run_worker


class LocalRunLauncher(DefaultRunLauncher):
    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = run_worker.reported_worker(run.run_id, run.tags)
        if worker is None:
            # The worker tags its run in the first op, a moment after it starts. One that
            # never does within the start timeout died before it could.
            started = self._instance.get_run_stats(run.run_id).start_time or time.time()
            if time.time() - started < self._instance.run_monitoring_start_timeout_seconds:
                return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker starting")
            return CheckRunHealthResult(
                WorkerStatus.FAILED, "run worker died before its first step"
            )
        if run_worker.is_alive(worker) is False:
            return CheckRunHealthResult(
                WorkerStatus.FAILED, f"run worker (pid {worker['pid']}) died"
            )
        # On another host this machine cannot tell; the start and cancel timeouts still apply.
        return CheckRunHealthResult(WorkerStatus.RUNNING)
