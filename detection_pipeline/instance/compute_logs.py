"""Dagster's local compute log manager without its mirroring processes.

Dagster's keeps what a run's steps print, stdout and stderr, in files under
DAGSTER_HOME/storage, which the UI shows; it also mirrors each stream back to the process's own
through a `tail -F` and a new Python watching that tail: four processes per run worker, 10-20 ms
to start and 15-50 ms to stop, with 20-50 ms of their CPU (measured here), between two runs on
cores MMDetection shares. Here the streams go to the files only: what a run prints is in the UI
(and the files), no longer also in the log of the process that forked its worker (the daemon's).
"""

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from dagster import Field, StringSource
from dagster._core.execution.compute_logs import redirect_to_file
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import (
    IO_TYPE_EXTENSION,
    LocalComputeLogManager,
)
from dagster._serdes import ConfigurableClassData
from dagster._utils import ensure_file, touch_file

from . import dagster_home


class FileComputeLogManager(LocalComputeLogManager):
    """`compute_logs:` with `base_dir` optional: Dagster's default place, DAGSTER_HOME/storage."""

    def __init__(
        self,
        base_dir: str | None = None,
        polling_timeout: float | None = None,
        inst_data: ConfigurableClassData | None = None,
    ):
        super().__init__(base_dir or str(dagster_home() / "storage"), polling_timeout, inst_data)

    @classmethod
    def config_type(cls) -> dict:
        return {**super().config_type(), "base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: dict
    ) -> "FileComputeLogManager":
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Iterator[CapturedLogContext]:
        stdout = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        stderr = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        ensure_file(stdout)
        ensure_file(stderr)
        with redirect_to_file(sys.stdout, stdout), redirect_to_file(sys.stderr, stderr):
            yield CapturedLogContext(log_key)
        touch_file(self.complete_artifact_path(log_key))  # as Dagster's: the capture is complete
