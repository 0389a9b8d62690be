"""Starting and stopping Dagster's own services (webserver, daemon) for a Dagster home."""

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml
from dagster import DagsterInstance

from .process_group import kill_process_group

# The code server loads this module, and Dagster names the code location after it; runs
# created in other processes must name the same location for the daemon to launch them.
DEFINITIONS_MODULE = "detection_pipeline.definitions"
WEBSERVER_MODULE = "detection_pipeline.instance.webserver"
HEARTBEAT_FRESH_SECONDS = 30
DAEMON_START_TIMEOUT_SECONDS = 120
STOP_GRACE_SECONDS = 15
CODE_SERVER_RESTART_DELAY_SECONDS = 2
CODE_SERVER_RESTART_MAX_DELAY_SECONDS = 60

logger = logging.getLogger(__name__)


class DaemonDidNotStart(RuntimeError):
    pass


def dagster_command(name: str, *args: str) -> list[str]:
    """A Dagster command of this environment, found beside this Python whether or not the
    environment is on PATH (`.venv/bin/detection-pipeline demo` does not activate it)."""
    return [str(Path(sys.executable).with_name(name)), *args]


def webserver_options(
    host: str, port: int, read_only: bool = False, path_prefix: str = ""
) -> list[str]:
    """Options of the Dagster webserver (UI and GraphQL), for `serve`."""
    options = ["-h", host, "-p", str(port)]
    if read_only:
        options.append("--read-only")
    if path_prefix:
        options += ["--path-prefix", path_prefix]
    return options


def daemon_command() -> list[str]:
    """The daemon as this product runs it (`detection-pipeline daemon`: `serve` below)."""
    return dagster_command("detection-pipeline", "daemon")


def _interrupt_on_signals() -> None:
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)


def start_service(command: list[str], log_file: Path | None = None) -> subprocess.Popen:
    """Starts a Dagster service, to be stopped with `stop_service`; output to log_file if given.

    From here on Ctrl-C and SIGTERM raise KeyboardInterrupt in this process, so the caller can
    stop the service. That also means no SIGINT is ignored when the service starts (a shell
    starts background jobs that way): Dagster maps SIGTERM to its SIGINT handler, and a service
    that ignores SIGINT could never be stopped cleanly.
    """
    _interrupt_on_signals()
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


def serve(instance: DagsterInstance, daemon: bool, webserver: list[str] | None) -> int:
    """Runs the Dagster daemon of `instance`, its webserver (with these `webserver_options`),
    or both, beside one code server they share, until one of them exits (its exit code) or this
    process is interrupted (0).

    Left to themselves each would keep code servers of its own, and waking beside a run's
    MMDetection work is what they cost: `dagster-daemon run -m MODULE` starts a new one every
    minute (it refreshes its workspace by dropping its servers: a Python importing Dagster and
    this code location, 1.5-3 s of CPU; a detection run it met went 25-35 % slower on 2 cores),
    the webserver keeps one it heartbeats every second, and `dagster dev` puts Dagster's proxy
    code server in front of one (for reloading code from the UI), heartbeating it every second:
    the two woke 350 times a second. Here one code server lives as long as the services, started
    again should it exit. They read the code location and its settings file when they start:
    restart them after changing either.
    """
    from dagster._core.workspace.load_target import ModuleTarget
    from dagster._grpc.server import GrpcServerProcess

    _interrupt_on_signals()
    [origin] = ModuleTarget(DEFINITIONS_MODULE, None, None, None).create_origins()
    with (
        GrpcServerProcess(
            instance_ref=instance.get_ref(),
            location_name=origin.location_name,
            loadable_target_origin=origin.loadable_target_origin,
            startup_timeout=instance.code_server_process_startup_timeout,
            wait_on_exit=True,
        ) as code_server,
        tempfile.TemporaryDirectory(prefix="detection_pipeline_services_") as folder,
    ):
        location = {
            "location_name": origin.location_name,
            "socket": code_server.socket,
            "additional_metadata": origin.loadable_target_origin.as_dict,  # shown in the UI
        }
        workspace = Path(folder) / "workspace.yaml"
        workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": location}]}))
        commands = []
        if daemon:
            commands.append(dagster_command("dagster-daemon", "run", "-w", str(workspace)))
        if webserver is not None:
            # Dagster's webserver, refusing cross-site requests (instance/webserver.py).
            commands.append(
                [sys.executable, "-m", WEBSERVER_MODULE, "-w", str(workspace), *webserver]
            )
        # In this process group: whoever stops the group (Ctrl-C, stop_service) stops them too.
        services = [subprocess.Popen(command) for command in commands]
        try:
            return supervise(services, code_server)
        except KeyboardInterrupt:
            return 0
        finally:
            for service in services:
                # It may have had the signal already: Dagster takes it once.
                service.terminate()
            for service in services:
                try:
                    service.wait(timeout=STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    service.kill()


def supervise(services: list[subprocess.Popen], code_server) -> int:
    """Waits for the first of `services` to exit (its exit code), starting `code_server` (a
    Dagster GrpcServerProcess; on the same socket: the services reconnect) again whenever it
    exits meanwhile. Waits without polling: nothing wakes beside the runs.

    A Ctrl-C reaches the code server with the rest of the process group: the delay before a
    restart lets this process see it too. A code server that keeps exiting soon after it
    started, or cannot be started, is tried again at growing intervals, up to one a minute.
    """
    delay = CODE_SERVER_RESTART_DELAY_SECONDS
    while True:
        started = time.monotonic()
        exited = _first_to_exit([*services, code_server.server_process])
        if exited in services:
            return exited.wait()
        if time.monotonic() - started > CODE_SERVER_RESTART_MAX_DELAY_SECONDS:
            delay = CODE_SERVER_RESTART_DELAY_SECONDS  # it ran a while: no crash loop
        while (exited := _first_to_exit(services, timeout=delay)) is None:
            delay = min(2 * delay, CODE_SERVER_RESTART_MAX_DELAY_SECONDS)
            try:
                code_server.start_server_process()
                break
            # Dagster raises a plain Exception (timed out, exited while starting): whatever
            # stopped it, a later try may not meet it.
            except Exception as error:  # noqa: BLE001
                logger.error(
                    "The code server exited and could not be started again (%s); the daemon "
                    "and webserver cannot reach this product's jobs meanwhile. Next try in %d s.",
                    error,
                    delay,
                )
        else:
            return exited.wait()


def _first_to_exit(
    processes: list[subprocess.Popen], timeout: float | None = None
) -> subprocess.Popen | None:
    """The first of `processes` to exit, or None if none does within `timeout` seconds."""
    for process in processes:
        if process.poll() is not None:
            return process
    # A pidfd is readable once its process has exited; an exit after the poll above included.
    pidfds = {os.pidfd_open(process.pid): process for process in processes}
    try:
        ready, _, _ = select.select(list(pidfds), [], [], timeout)
        return pidfds[ready[0]] if ready else None
    finally:
        for pidfd in pidfds:
            os.close(pidfd)


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
    process = start_service(daemon_command(), log_file)
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
