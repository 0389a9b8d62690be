"""Stopping a process together with everything it started.

Children that may start children of their own (MMDetection, the Dagster daemon) are started in a
session of their own (`start_new_session=True`), so one signal to the group reaches them all.
"""

import os
import signal
import subprocess

GRACE_SECONDS = 5.0


def kill_process_group(process: subprocess.Popen, grace_seconds: float = GRACE_SECONDS) -> None:
    """SIGTERM to the process's whole group, SIGKILL to whatever is left after the grace period.

    Safe to call after the process exited: descendants left in its group are still killed.
    """
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return  # the group is empty: nothing left to kill
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
