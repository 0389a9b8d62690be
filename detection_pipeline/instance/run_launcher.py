"""The run launcher: run workers forked from a warm process, with the health check Dagster's
default launcher lacks.

Dagster's default launcher has the code server start each run worker as a new Python, which
spends 1.5-2 s importing before the run's first op. This one has a fork server
(run_worker_server.py) with those imports done fork the run worker instead, and falls back to
the default way when it cannot.

The default launcher also cannot tell whether a run worker still lives, so Dagster's run
monitoring would leave the run of a `kill -9`-ed worker STARTED for ever, holding the one-run
queue. With this check, run monitoring fails such a run within one poll interval, and the
upkeep sensor brings its record along.
"""

import contextlib
import os
import signal
import socket
import sys
import threading
import time

from dagster import DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._serdes import serialize_value

from .. import fork_server, run_tags, run_worker


class LocalRunLauncher(DefaultRunLauncher):
    def __init__(self, inst_data=None):
        super().__init__(inst_data)
        # Set when a run worker this launcher forked exits: the queue can start the next run
        # at once instead of at its next look (run_coordinator.py).
        self.run_worker_exited = threading.Event()
        self.forked_workers_running = 0
        self._count_lock = threading.Lock()

    def _await_exit(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.recv(fork_server.MESSAGE_BYTES)  # its exit code, or the server's end
        with self._count_lock:
            self.forked_workers_running -= 1
        self.run_worker_exited.set()

    def _fork_run_worker(self, run: DagsterRun) -> int:
        """Has this process's run worker server fork the run's worker; returns its pid."""
        path = fork_server.runtime_dir() / f"runs-{os.getpid()}.sock"
        command = [
            sys.executable,
            "-m",
            "detection_pipeline.instance.run_worker_server",
            str(path),
            "--parent",
            str(os.getpid()),
        ]
        conn = fork_server.connect_or_start(path, command)
        request = {"run_id": run.run_id, "instance_ref": serialize_value(self._instance.get_ref())}
        pid = fork_server.request_fork(conn, request, [])
        with self._count_lock:
            self.forked_workers_running += 1
        threading.Thread(target=self._await_exit, args=(conn,), daemon=True).start()
        return pid

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        try:
            pid = self._fork_run_worker(run)
        except (fork_server.ForkServerUnavailable, OSError) as error:
            self._instance.report_engine_event(
                f"{error}; the code server starts the run worker instead", run, cls=type(self)
            )
            super().launch_run(context)
            return
        self._instance.add_run_tags(
            run.run_id, {run_tags.RUN_WORKER: run_worker.describe(run.run_id, pid)}
        )

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if not run or run.is_finished or GRPC_INFO_TAG in run.tags:
            return super().terminate(run_id)
        worker = run_worker.reported_worker(run_id, run.tags)
        if worker is None or not run_worker.is_alive(worker):
            return False
        self._instance.report_run_canceling(run)
        # What the code server does to the workers it starts: Dagster cancels the run.
        os.kill(worker["pid"], signal.SIGINT)
        return True

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
