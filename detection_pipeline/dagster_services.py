"""Starting and stopping Dagster's own services (webserver, daemon) for a Dagster home."""

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from dagster import DagsterInstance

from .process_group import kill_process_group

# The webserver and daemon load this module (`-m`), and Dagster names the code location after
# it; runs created in other processes must name the same location for the daemon to launch them.
DEFINITIONS_MODULE = "detection_pipeline.definitions"
HEARTBEAT_FRESH_SECONDS = 30
DAEMON_START_TIMEOUT_SECONDS = 120
STOP_GRACE_SECONDS = 15


class DaemonDidNotStart(RuntimeError):
    pass


def dagster_command(name: str, *args: str) -> list[str]:
    """A Dagster command of this environment, found beside this Python whether or not the
    environment is on PATH (`.venv/bin/detection-pipeline demo` does not activate it)."""
    return [str(Path(sys.executable).with_name(name)), *args]


def webserver_command(
    host: str, port: int, read_only: bool = False, path_prefix: str = ""
) -> list[str]:
    """The Dagster webserver (UI and GraphQL) of this product's code location."""
    options = ["--read-only"] if read_only else []
    if path_prefix:
        options += ["--path-prefix", path_prefix]
    return dagster_command(
        "dagster-webserver", "-m", DEFINITIONS_MODULE, "-h", host, "-p", str(port), *options
    )


def start_service(command: list[str], log_file: Path | None = None) -> subprocess.Popen:
    """Starts a Dagster service, to be stopped with `stop_service`; output to log_file if given.

    From here on Ctrl-C and SIGTERM raise KeyboardInterrupt in this process, so the caller can
    stop the service. That also means no SIGINT is ignored when the service starts (a shell
    starts background jobs that way): Dagster maps SIGTERM to its SIGINT handler, and a service
    that ignores SIGINT could never be stopped cleanly.
    """

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)
    output = log_file.open("a") if log_file else None
    # A session of its own, so stopping reaches the code servers and run workers it started.
    return subprocess.Popen(
        command,
        start_new_session=True,
        stdout=output,
        stderr=subprocess.STDOUT if output else None,
    )


def stop_service(process: subprocess.Popen) -> None:
    kill_process_group(process, grace_seconds=STOP_GRACE_SECONDS)


def daemon_running(instance: DagsterInstance) -> bool:
    """Whether a daemon has reported in for this instance lately."""
    heartbeats = instance.get_daemon_heartbeats().values()
    newest = max((heartbeat.timestamp for heartbeat in heartbeats), default=0)
    return time.time() - newest < HEARTBEAT_FRESH_SECONDS


@contextlib.contextmanager
def running_daemon(instance: DagsterInstance, log_file: Path) -> Iterator[subprocess.Popen | None]:
    """The daemon of this instance: the one already running (yields None), or one started here
    for the duration of the block (yields its process)."""
    if daemon_running(instance):
        yield None
        return
    process = start_service(
        dagster_command("dagster-daemon", "run", "-m", DEFINITIONS_MODULE), log_file
    )
    try:
        deadline = time.monotonic() + DAEMON_START_TIMEOUT_SECONDS
        while not daemon_running(instance):
            if process.poll() is not None or time.monotonic() > deadline:
                raise DaemonDidNotStart(f"the Dagster daemon did not start; see {log_file}")
            time.sleep(0.5)
        yield process
    finally:
        stop_service(process)
        # Its last heartbeats would pass for a running daemon for a while.
        instance.wipe_daemon_heartbeats()
