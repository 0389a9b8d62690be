"""Stopping a process together with everything it started.

Children that may start children of their own (MMDetection, the Dagster daemon) are started in a
session of their own (`start_new_session=True`), so one signal to the group reaches them all.
"""

import contextlib
import ctypes
import os
import signal
import subprocess

GRACE_SECONDS = 5.0


def kill_process_group(process: subprocess.Popen, grace_seconds: float = GRACE_SECONDS) -> None:
    """SIGTERM to the process's whole group, SIGKILL to whatever is left after the grace period.

    Safe to call after the process exited: descendants left in its group are still killed. A
    process that does not lead a group (a warm worker's child stopped or hung before it made
    its own) is signalled alone.
    """
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            if process.poll() is not None:
                return  # the group is empty and the process gone: nothing left to kill
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass


# The pid of the supervisor (`serve`) that started this process, which ends with it.
SUPERVISOR_ENV = "DETECTION_PIPELINE_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_libc = ctypes.CDLL(None, use_errno=True)


def end_with_supervisor() -> None:
    """In a process a supervisor (`serve`) started: has the kernel send it SIGTERM when the
    supervisor dies, even by `kill -9`, or sends it now if the supervisor has died already. Its
    children do not inherit the duty: the variable is taken out of the environment here."""
    supervisor = os.environ.pop(SUPERVISOR_ENV, None)
    if supervisor is None:
        return
    if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(supervisor):
        os.kill(os.getpid(), signal.SIGTERM)
