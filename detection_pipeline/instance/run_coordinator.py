"""Dagster's queue (QueuedRunCoordinator), dequeuing every half second.

Dagster's setting takes whole seconds, and its daemon then waits in half-second steps: at the
smallest setting, 1 s, a queued run waited 0.85 s on average after the previous one ended (the
largest part of the gap between two runs once run workers are forked). Half a second costs one
query of the runs table twice a second.
"""

from dagster._core.run_coordinator import QueuedRunCoordinator

DEQUEUE_INTERVAL_SECONDS = 0.5


class SequentialRunCoordinator(QueuedRunCoordinator):
    @property
    def dequeue_interval_seconds(self) -> float:
        return DEQUEUE_INTERVAL_SECONDS
