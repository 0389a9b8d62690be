"""Run workers forked from a process that has Dagster and this code location imported.

    python -m detection_pipeline.instance.run_worker_server SOCKET --parent PID

Dagster's code server starts every run worker as a new Python (multiprocessing "spawn"), which
imports Dagster and this code location again: 1.5-2 s before each run's first op. This fork
server (fork_server.py) has them imported; the run launcher (run_launcher.py) asks it for a run
worker, which then executes the run as `dagster api execute_run` would. The server belongs to
the process whose launcher started it (the daemon) and stops with it.
"""

import argparse
import importlib

from dagster._cli.api import _execute_run_command_body
from dagster._utils.interrupts import capture_interrupts

from .. import definitions
from ..fork_server import ForkServer
from ..records import record_store
from ..records.schema import Status
from . import opened_instance


class RunWorkerServer(ForkServer):
    runs_read = False

    def prepare(self, request: dict) -> None:
        # Opened once here, every run worker inherits the instance and its engines, with the
        # statements they compiled for a first read of the records (40 ms in a new run
        # worker) and of a Dagster run, whose storage then knows its runs table's columns
        # (schema_checks.py: on PostgreSQL three catalog queries, 30 ms, between two runs);
        # each opens connections of its own (forked_engines.py, pooled_postgres.py).
        try:
            instance = opened_instance(request["instance_ref"])
            if not self.runs_read:
                record_store(instance).list_runs(status=Status.PROCESSING.value)
                instance.get_run_by_id(request["run_id"])
                self.runs_read = True
        except Exception as error:  # noqa: BLE001 - the run worker tries again and reports why
            print(f"could not open the instance: {error}", flush=True)

    def child(self, request: dict, fds: list[int]) -> int:
        instance = opened_instance(request["instance_ref"])
        # Terminating the run sends this process SIGINT, which Dagster turns into a
        # cancellation of the run, as in the run workers the code server starts.
        with capture_interrupts(), instance:
            try:
                # The home's settings as they are now, as a new Python would read them (3 ms).
                importlib.reload(definitions)
            except Exception as error:
                run = instance.get_run_by_id(request["run_id"])
                instance.report_run_failed(run, f"the run worker could not load the jobs: {error}")
                raise
            return _execute_run_command_body(
                request["run_id"], instance, lambda event: None, set_exit_code_on_failure=False
            )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m detection_pipeline.instance.run_worker_server")
    parser.add_argument("socket")
    parser.add_argument("--parent", type=int, required=True, help="stop when this process ends")
    args = parser.parse_args()
    RunWorkerServer(args.socket, idle_seconds=float("inf"), parent_pid=args.parent).serve()


if __name__ == "__main__":
    main()
