"""`detection-pipeline daemon`: the daemon keeps one code server while it runs (started again
if it dies, at growing intervals while it cannot be), a second one for the same home is refused,
and stopping it stops every process it started."""

import os
import signal
import subprocess
import threading
import time

from dagster import DagsterInstance
from dagster._core.scheduler.instigation import TickStatus
from dagster._daemon.controller import RELOAD_WORKSPACE_INTERVAL

from detection_pipeline import dagster_services
from detection_pipeline.dagster_services import daemon_running, supervise
from detection_pipeline.sensors.upkeep import UPKEEP_SENSOR

from .conftest import CLI, alive, code_servers, descendants, make_home, wait_until


def upkeep_ticks_since(instance: DagsterInstance, since: float) -> list:
    """The upkeep sensor's ticks that began after `since` (a time.time())."""
    [state] = [s for s in instance.all_instigator_state() if s.name == UPKEEP_SENSOR]
    ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=5)
    return [tick for tick in ticks if tick.timestamp > since]


def test_the_daemon_keeps_its_code_server_refuses_a_second_and_stops_with_all_it_started(
    tmp_path, monkeypatch
):
    """`dagster-daemon run -m MODULE` replaces its code server every minute (a new Python importing
    Dagster and this code location, seconds of CPU beside a run's MMDetection work). One code
    server, not Dagster's proxy in front of one (two processes heartbeating each other every
    second, beside the runs' work)."""
    settings = make_home(tmp_path / "home")
    monkeypatch.setenv("DAGSTER_HOME", str(settings.home))
    log = tmp_path / "daemon.log"
    daemon = subprocess.Popen(
        [CLI, "daemon"],
        env=os.environ,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # as in a terminal of its own; the test's cleanup kills the group
    )
    try:
        with DagsterInstance.get() as instance:
            wait_until(lambda: daemon_running(instance), timeout=120)
            servers = code_servers(descendants(daemon.pid))
            assert len(servers) == 1, log.read_text()
            time.sleep(RELOAD_WORKSPACE_INTERVAL + 10)  # past the daemon's workspace refresh
            assert code_servers(descendants(daemon.pid)) == servers, log.read_text()
            assert daemon_running(instance)
            # A code server that dies is started again, and the sensors tick through it.
            os.kill(servers.pop(), signal.SIGKILL)
            killed_at = time.time()
            wait_until(lambda: len(code_servers(descendants(daemon.pid))) == 1, timeout=60)
            ticks = wait_until(lambda: upkeep_ticks_since(instance, killed_at + 5), timeout=60)
            assert ticks[-1].status != TickStatus.FAILURE, ticks[-1].error
            # A second daemon would launch a second run at once: refused, for `up` too.
            for command in ("daemon", "up"):
                second = subprocess.run(
                    [CLI, command],
                    env=os.environ,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert second.returncode == 1, second.stdout + second.stderr
                assert "a Dagster daemon already runs for the home" in second.stderr
        started = descendants(daemon.pid)
        daemon.send_signal(signal.SIGINT)  # to it alone: it stops the rest
        assert daemon.wait(timeout=60) == 0
        wait_until(lambda: not [pid for pid in started if alive(pid)], timeout=30)
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGKILL)


class FailingCodeServer:
    """Stands in for Dagster's GrpcServerProcess in `supervise`: a real process, and the first
    `failures` starts after it exits fail as Dagster's do (a plain Exception)."""

    def __init__(self, failures: int):
        self.failures = failures
        self.starts: list[float] = []
        self.server_process = subprocess.Popen(["sleep", "600"])

    def start_server_process(self):
        self.starts.append(time.monotonic())
        if len(self.starts) <= self.failures:
            raise Exception("gRPC server exited with return code 1 while starting up")  # noqa: TRY002
        self.server_process = subprocess.Popen(["sleep", "600"])


def test_a_code_server_that_cannot_be_started_again_is_tried_at_growing_intervals(
    monkeypatch, caplog
):
    monkeypatch.setattr(dagster_services, "CODE_SERVER_RESTART_DELAY_SECONDS", 0.2)
    code_server = FailingCodeServer(failures=2)
    service = subprocess.Popen(["sleep", "600"])
    result = []
    supervising = threading.Thread(target=lambda: result.append(supervise([service], code_server)))
    supervising.start()
    try:
        first = code_server.server_process
        first.kill()
        wait_until(lambda: code_server.server_process is not first, timeout=30)
        assert code_server.server_process.poll() is None
        first_gap, second_gap = (b - a for a, b in zip(code_server.starts, code_server.starts[1:]))
        assert second_gap > 1.5 * first_gap, code_server.starts
        assert "could not be started again" in caplog.text
        assert "Next try in" in caplog.text
        # The service's exit ends the supervision with its exit code.
        service.kill()
        supervising.join(timeout=10)
        assert result == [-signal.SIGKILL]
    finally:
        for process in (service, code_server.server_process):
            process.kill()
        supervising.join(timeout=10)
