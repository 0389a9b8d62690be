"""Starting and stopping Dagster's own services (webserver, daemon) for a Dagster home."""

import contextlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import yaml
from dagster import DagsterInstance

from .process_group import kill_process_group

# The webserver and daemon load this module (`-m`), and Dagster names the code location after
# it; runs created in other processes must name the same location for the daemon to launch them.
DEFINITIONS_MODULE = "detection_pipeline.definitions"
HEARTBEAT_FRESH_SECONDS = 30
DAEMON_START_TIMEOUT_SECONDS = 120
STOP_GRACE_SECONDS = 15
CODE_SERVER_RESTART_DELAY_SECONDS = 2


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


def daemon_command() -> list[str]:
    """The daemon as this product runs it (`detection-pipeline daemon`: serve_daemon below)."""
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


def serve_daemon(instance: DagsterInstance) -> int:
    """Runs the Dagster daemon of `instance` beside one code server that lives as long as it
    does, until the daemon exits (its exit code) or this process is interrupted (0).

    `dagster-daemon run -m MODULE` starts a new code server every minute: it refreshes its
    workspace by dropping its servers, and each new one is a Python importing Dagster and this
    code location, 1.5-3 s of CPU that lands on whatever MMDetection is doing (a detection
    run it met went 25-35 % slower on 2 cores). This keeps one, started here and started again
    should it exit. Not Dagster's proxy code server (what `dagster dev`, `up`, keeps): that is
    a second process in front of the code server, for reloading code from the UI, heartbeating
    it every second; the two woke 350 times a second beside a run's MMDetection work. The
    daemon and its code server read the code location and its settings file when they start:
    restart the daemon after changing them.
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
        tempfile.TemporaryDirectory(prefix="detection_pipeline_daemon_") as folder,
    ):
        location = {
            "location_name": origin.location_name,
            "socket": code_server.socket,
            "additional_metadata": origin.loadable_target_origin.as_dict,  # shown in the UI
        }
        workspace = Path(folder) / "workspace.yaml"
        workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": location}]}))
        stopping = threading.Event()
        threading.Thread(target=_restart_on_exit, args=(code_server, stopping), daemon=True).start()
        # In this process group: whoever stops the group (Ctrl-C, stop_service) stops it too.
        daemon = subprocess.Popen(dagster_command("dagster-daemon", "run", "-w", str(workspace)))
        try:
            return daemon.wait()
        except KeyboardInterrupt:
            daemon.terminate()  # it may have had the signal already: Dagster takes it once
            try:
                daemon.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                daemon.kill()
            return 0
        finally:
            stopping.set()


def _restart_on_exit(code_server, stopping: threading.Event) -> None:
    """Starts the code server again (on the same socket: the daemon reconnects) whenever it
    exits, unless the daemon is stopping. Waits without polling: nothing wakes meanwhile. A
    Ctrl-C reaches the code server with the rest of the process group: the delay lets this
    process see it too before it would start a new one."""
    while True:
        code_server.server_process.wait()
        if stopping.wait(CODE_SERVER_RESTART_DELAY_SECONDS):
            return
        code_server.start_server_process()


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
