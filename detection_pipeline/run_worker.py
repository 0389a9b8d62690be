"""Which process is a run's worker, and whether it still lives.

A pid alone is not enough: after the worker dies, the system may give its pid to another
process. The pid's start time (from /proc) tells them apart.
"""

import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from . import run_tags


def start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot; None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return None if fields[0] == "Z" else fields[19]  # a zombie has died already


def describe(run_id: str, pid: int) -> str:
    """Process `pid` as the worker of run `run_id`, as it goes into the run's tags."""
    return json.dumps(
        {"run_id": run_id, "host": socket.gethostname(), "pid": pid, "start": start_ticks(pid)}
    )


def this_process(run_id: str) -> str:
    """This process as the worker of run `run_id`."""
    return describe(run_id, os.getpid())


def reported_worker(run_id: str, tags: Mapping[str, str]) -> dict | None:
    """The worker the run's tags name, if it is this run's own (a re-execution started from
    the UI copies its parent's tags, worker included)."""
    worker = json.loads(tags.get(run_tags.RUN_WORKER, "null"))
    return worker if worker and worker["run_id"] == run_id else None


def is_alive(worker: dict) -> bool | None:
    """Whether the worker process still runs; None when it ran on another host, where this one
    cannot look."""
    if worker["host"] != socket.gethostname():
        return None
    return start_ticks(worker["pid"]) == worker["start"]
