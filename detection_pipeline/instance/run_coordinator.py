"""Dagster's queue (QueuedRunCoordinator), starting the next run as soon as the last one ends.

Dagster's dequeue daemon looks at the queue every `dequeue_interval_seconds` (whole seconds),
waiting in half-second steps: at the smallest setting, 1 s, a queued run waited 0.85 s on
average after the previous one ended. Here the daemon's looks are half a second apart, and the
wait before a look ends early when a run worker the launcher forked exits (run_launcher.py).
While as many forked run workers run as the queue allows, nothing can start before one exits:
the daemon then looks every 5 s only (on PostgreSQL every look opens new connections, and
on a machine whose cores MMDetection keeps busy every look takes from it).

The wait sits where the daemon asks for the queue's settings at the start of a look
(`get_run_queue_config`), in the daemon's dequeue thread only, so no other caller ever waits.
The daemon asks again within a look (for op concurrency pools) and reads `dequeue_use_threads`
once a look, after it chose the runs to launch: that ends the look.
"""

import threading

from dagster._core.run_coordinator import QueuedRunCoordinator

from .run_launcher import LocalRunLauncher

DEQUEUE_INTERVAL_SECONDS = 0.5
# Short all the same (run monitoring's poll): it bounds the wait should an exit go unheard.
FULL_QUEUE_LOOK_SECONDS = 5.0
DEQUEUE_THREAD = "dagster-daemon-QUEUED_RUN_COORDINATOR"  # dagster._daemon.controller names it


class SequentialRunCoordinator(QueuedRunCoordinator):
    _looking = False  # the dequeue thread is in a look: it has waited already

    @property
    def dequeue_interval_seconds(self) -> float:
        return DEQUEUE_INTERVAL_SECONDS

    @property
    def dequeue_use_threads(self) -> bool:
        self._looking = False
        return super().dequeue_use_threads

    def get_run_queue_config(self):
        config = super().get_run_queue_config()
        if threading.current_thread().name == DEQUEUE_THREAD and not self._looking:
            self._looking = True
            self._await_run_worker_exit(config.max_concurrent_runs)
        return config

    def _await_run_worker_exit(self, limit: int) -> None:
        """`limit`: the runs the queue allows at once, -1 for no limit."""
        launcher = self._instance.run_launcher
        if isinstance(launcher, LocalRunLauncher):
            full = 0 < limit <= launcher.forked_workers_running
            # Dagster's loop adds no wait of its own after a look that took this long.
            launcher.run_worker_exited.wait(
                FULL_QUEUE_LOOK_SECONDS if full else DEQUEUE_INTERVAL_SECONDS
            )
            # Cleared before the daemon reads the runs: an exit after this sets it again.
            launcher.run_worker_exited.clear()
