"""`detection-pipeline daemon`: the daemon keeps one code server while it runs (started again
if it dies), a second one for the same home is refused, and stopping it stops every process it
started."""

import contextlib
import os
import signal
import subprocess
import time

from dagster import DagsterInstance
from dagster._core.scheduler.instigation import TickStatus
from dagster._daemon.controller import RELOAD_WORKSPACE_INTERVAL

from detection_pipeline.dagster_services import daemon_running
from detection_pipeline.sensors.upkeep import UPKEEP_SENSOR

from .conftest import CLI, alive, command_line, descendants, make_home, wait_until


def code_servers(pids: set[int]) -> set[int]:
    """Those of `pids` that are Dagster code servers (`dagster api grpc`, `dagster code-server`)."""
    found = set()
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):  # a process that ended meanwhile
            command = command_line(pid)
            if "dagster api grpc" in command or "dagster code-server" in command:
                found.add(pid)
    return found


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
