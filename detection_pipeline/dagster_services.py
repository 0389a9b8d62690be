"""Starting and stopping Dagster's own services (webserver, daemon) for a Dagster home."""

import contextlib
import fcntl
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml
from dagster import DagsterInstance

from .fork_server import open_private
from .process_group import SUPERVISOR_ENV, kill_process_group

# The code server loads this module, and Dagster names the code location after it; runs
# created in other processes must name the same location for the daemon to launch them.
DEFINITIONS_MODULE = "detection_pipeline.definitions"
WEBSERVER_MODULE = "detection_pipeline.instance.webserver"
DAEMON_MODULE = "detection_pipeline.instance.daemon"
DAEMON_START_TIMEOUT_SECONDS = 120
STOP_GRACE_SECONDS = 15
RESTART_DELAY_SECONDS = 2
RESTART_MAX_DELAY_SECONDS = 60
DAEMON_LOCK_FILE = "daemon.lock"

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


def serve(instance: DagsterInstance, daemon_lock: int | None, webserver: list[str] | None) -> None:
    """Runs the Dagster daemon of `instance` (given the home's `daemon_lock`, held: the daemon
    holds it too), its webserver (with these `webserver_options`), or both, beside one code
    server they share, until this process is interrupted. Each is started again should it exit
    (`supervise`), and each ends with this process, even one killed with `kill -9`.

    Left to themselves each would keep code servers of its own, and waking beside a run's
    MMDetection work is what they cost: `dagster-daemon run -m MODULE` starts a new one every
    minute (it refreshes its workspace by dropping its servers: a Python importing Dagster and
    this code location, 1.5-3 s of CPU; a detection run it met went 25-35 % slower on 2 cores),
    the webserver keeps one it heartbeats every second, and `dagster dev` puts Dagster's proxy
    code server in front of one (for reloading code from the UI), heartbeating it every second:
    the two woke 350 times a second. Here one code server lives as long as the services. They
    read the code location and its settings file when they start: restart them after changing
    either.
    """
    from dagster._core.workspace.load_target import ModuleTarget
    from dagster._grpc.server import GrpcServerProcess

    _interrupt_on_signals()
    [origin] = ModuleTarget(DEFINITIONS_MODULE, None, None, None).create_origins()
    # Each service ends with this process (end_with_supervisor): Dagster starts the code server
    # from this environment.
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
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

        def starter(command: list[str], before: Callable[[], None] = lambda: None):
            def start() -> subprocess.Popen:
                before()
                # In this process group: whoever stops the group (Ctrl-C, stop_service) stops
                # them too.
                return subprocess.Popen(
                    command, pass_fds=[] if daemon_lock is None else [daemon_lock]
                )

            return start

        def restart_code_server() -> subprocess.Popen:
            code_server.start_server_process()
            return code_server.server_process

        code_server_service = Supervised(
            "code server",
            restart_code_server,
            "the daemon and webserver cannot reach this product's jobs",
            code_server.server_process,
        )
        services = []  # those this function stops; the code server stops with its context
        if daemon_lock is not None:
            command = [sys.executable, "-m", DAEMON_MODULE, "run", "-w", str(workspace)]
            # A killed daemon's heartbeats would pass for a second daemon's (Dagster logs an
            # error for them) and for a live one's in `status`.
            services.append(
                Supervised(
                    "daemon",
                    starter(command, instance.wipe_daemon_heartbeats),
                    "no run starts and no sensor ticks",
                )
            )
        if webserver is not None:
            # Dagster's webserver, refusing cross-site requests (instance/webserver.py).
            command = [sys.executable, "-m", WEBSERVER_MODULE, "-w", str(workspace), *webserver]
            services.append(
                Supervised("webserver", starter(command), "the UI and GraphQL do not answer")
            )
        try:
            supervise([code_server_service, *services])
        except KeyboardInterrupt:
            pass
        finally:
            started = [service.process for service in services]
            for process in started:
                # It may have had the signal already: Dagster takes it once.
                process.terminate()
            for process in started:
                try:
                    process.wait(timeout=STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()


class Supervised:
    """A process `supervise` keeps running: `start` starts it (again), `process` is the one
    already started if any, `meanwhile` says what does not work while it is down."""

    def __init__(
        self,
        name: str,
        start: Callable[[], subprocess.Popen],
        meanwhile: str,
        process: subprocess.Popen | None = None,
    ):
        self.name = name
        self.start = start
        self.meanwhile = meanwhile
        self.process = process or start()
        self.started = time.monotonic()
        self.delay = RESTART_DELAY_SECONDS
        self.start_failed = False

    def restart(self) -> None:
        """Starts it again after a delay that doubles, up to a minute, while it keeps exiting
        soon after it started or cannot be started."""
        if time.monotonic() - self.started > RESTART_MAX_DELAY_SECONDS:
            self.delay = RESTART_DELAY_SECONDS  # it ran a while: no crash loop
        if not self.start_failed:  # said already
            logger.error(
                "The %s exited (%s); starting it again in %g s.",
                self.name,
                _exit_status(self.process.wait()),
                self.delay,
            )
        # A Ctrl-C reaches the services with the rest of the process group: the delay lets this
        # process see it too before it restarts anything.
        time.sleep(self.delay)
        self.delay = min(2 * self.delay, RESTART_MAX_DELAY_SECONDS)
        self.started = time.monotonic()
        self.start_failed = True
        try:
            self.process = self.start()
            self.start_failed = False
        # Dagster raises a plain Exception for a code server (timed out, exited while starting):
        # whatever stopped it, a later try may not meet it.
        except Exception as error:  # noqa: BLE001
            logger.error(
                "The %s could not be started again (%s); %s meanwhile. Next try in %g s.",
                self.name,
                error,
                self.meanwhile,
                self.delay,
            )


def _exit_status(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


def supervise(services: list[Supervised]) -> None:
    """Starts each of `services` again whenever it exits, until this process is interrupted
    (KeyboardInterrupt). Waits without polling: nothing wakes beside the runs."""
    while True:
        exited = _first_to_exit([service.process for service in services])
        next(service for service in services if service.process is exited).restart()


def _first_to_exit(processes: list[subprocess.Popen]) -> subprocess.Popen:
    """The first of `processes` to exit."""
    for process in processes:
        if process.poll() is not None:
            return process
    # A pidfd is readable once its process has exited; an exit after the poll above included.
    pidfds = {os.pidfd_open(process.pid): process for process in processes}
    try:
        ready, _, _ = select.select(list(pidfds), [], [])
        return pidfds[ready[0]]
    finally:
        for pidfd in pidfds:
            os.close(pidfd)


class DaemonAlreadyRuns(RuntimeError):
    def __init__(self, home: Path):
        super().__init__(
            f"a Dagster daemon already runs for the home {home} (it holds "
            f"{home / DAEMON_LOCK_FILE}), and a second one would start a second run at once. "
            "Stop it first; for another UI on this home start `detection-pipeline webserver`, "
            "which has no daemon."
        )


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def daemon_lock(home: Path, wait_seconds: float = 0) -> Iterator[int]:
    """Holds the home's daemon lock for the block (yields its file descriptor, for `serve`).

    One daemon per home: each launches the queue's next run on its own, two would run two at
    once. The kernel releases the lock when the last process holding it dies, however it dies
    (the daemon `serve` starts holds it too, so it stays held while that daemon stops), and a
    new daemon can start at once. Waits up to `wait_seconds` for the one holding it to stop,
    then raises DaemonAlreadyRuns.
    """
    fd = open_private(home / DAEMON_LOCK_FILE, os.O_RDWR)
    try:
        deadline = time.monotonic() + wait_seconds
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                raise DaemonAlreadyRuns(home)
            time.sleep(0.2)
        yield fd
    finally:
        os.close(fd)


def daemon_running(home: Path) -> bool:
    """Whether a daemon runs for this home: something holds its daemon lock."""
    try:
        with daemon_lock(home):  # let go at once
            return False
    except DaemonAlreadyRuns:
        return True


def _reported_in_since(instance: DagsterInstance, since: float) -> bool:
    """Whether a daemon has sent this instance a heartbeat since `since` (a time.time())."""
    heartbeats = instance.get_daemon_heartbeats().values()
    return max((heartbeat.timestamp for heartbeat in heartbeats), default=0) > since


@contextlib.contextmanager
def running_daemon(
    instance: DagsterInstance, home: Path, log_file: Path
) -> Iterator[subprocess.Popen | None]:
    """The daemon of this home: the one already running (yields None), or one started here for
    the duration of the block, once it has reported in (yields its process)."""
    if daemon_running(home):
        yield None
        return
    started = time.time()
    process = start_service(daemon_command(), log_file)
    try:
        deadline = time.monotonic() + DAEMON_START_TIMEOUT_SECONDS
        while not _reported_in_since(instance, started):
            if process.poll() is not None or time.monotonic() > deadline:
                raise DaemonDidNotStart(f"the Dagster daemon did not start; see {log_file}")
            time.sleep(0.5)
        yield process
    finally:
        stop_service(process)
        # `status` would show it running for a while after.
        instance.wipe_daemon_heartbeats()
