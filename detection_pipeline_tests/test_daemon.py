"""`detection-pipeline daemon`: the daemon keeps one code server while it runs (started again
if it dies, at growing intervals while it cannot be), a second one for the same home is refused
(the home's daemon lock, held by the live daemon), and stopping it stops every process it
started."""

import itertools
import os
import signal
import subprocess
import sys
import time

import pytest
from dagster import DagsterInstance
from dagster._core.scheduler.instigation import TickStatus
from dagster._daemon.controller import RELOAD_WORKSPACE_INTERVAL

from detection_pipeline.dagster_services import DaemonAlreadyRuns, daemon_lock, daemon_running
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
            wait_until(instance.get_daemon_heartbeats, timeout=120)  # it has started
            assert daemon_running(settings.home)
            servers = code_servers(descendants(daemon.pid))
            assert len(servers) == 1, log.read_text()
            time.sleep(RELOAD_WORKSPACE_INTERVAL + 10)  # past the daemon's workspace refresh
            assert code_servers(descendants(daemon.pid)) == servers, log.read_text()
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
                assert "daemon.lock" in second.stderr
        started = descendants(daemon.pid)
        daemon.send_signal(signal.SIGINT)  # to it alone: it stops the rest
        assert daemon.wait(timeout=60) == 0
        wait_until(lambda: not [pid for pid in started if alive(pid)], timeout=30)
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGKILL)


# Two services under `supervise`, in a process of their own (stopped with its group): a code
# server whose first two restarts fail as Dagster's do (a plain Exception), and a daemon.
SUPERVISED_SLEEPERS = """
import logging, subprocess, sys, time
from detection_pipeline import dagster_services
from detection_pipeline.dagster_services import Supervised, supervise

logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
dagster_services.RESTART_DELAY_SECONDS = 0.2
starts = 0

def start_code_server():
    global starts
    starts += 1
    print("start", starts, time.monotonic(), flush=True)
    if starts in (2, 3):
        raise Exception("gRPC server exited with return code 1 while starting up")
    process = subprocess.Popen(["sleep", "600"])
    print("code server", process.pid, flush=True)
    return process

def start_daemon():
    process = subprocess.Popen(["sleep", "600"])
    print("daemon", process.pid, flush=True)
    return process

supervise([
    Supervised("code server", start_code_server, "nothing works"),
    Supervised("daemon", start_daemon, "no run starts"),
])
"""


def test_a_service_that_exits_is_started_again_at_growing_intervals_while_it_cannot_be(tmp_path):
    log = tmp_path / "supervise.log"
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISED_SLEEPERS],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def pids(name: str) -> list[int]:
        return [
            int(line.split()[-1]) for line in log.read_text().splitlines() if line.startswith(name)
        ]

    try:
        [code_server] = wait_until(lambda: pids("code server"), timeout=30)
        [daemon] = wait_until(lambda: pids("daemon"), timeout=30)
        os.kill(code_server, signal.SIGKILL)
        wait_until(lambda: len(pids("code server")) == 2, timeout=30, state=log.read_text)
        starts = [
            float(line.split()[2])
            for line in log.read_text().splitlines()
            if line.startswith("start")
        ]
        first_gap, second_gap = (b - a for a, b in itertools.pairwise(starts[1:]))
        assert second_gap > 1.5 * first_gap, starts
        text = log.read_text()
        assert "The code server exited (killed by SIGKILL); starting it again in 0.2 s" in text
        assert "could not be started again (gRPC server exited" in text
        assert "nothing works meanwhile. Next try in 0.8 s" in text
        # Any service, not only the code server; the others go on.
        os.kill(daemon, signal.SIGKILL)
        wait_until(lambda: len(pids("daemon")) == 2, timeout=30, state=log.read_text)
        assert all(alive(pid) for pid in (pids("code server")[-1], pids("daemon")[-1]))
        assert supervisor.poll() is None
    finally:
        os.killpg(supervisor.pid, signal.SIGKILL)
        supervisor.wait()


def test_the_daemon_lock_is_held_while_any_process_given_it_lives(tmp_path):
    """`up` passes its lock to the daemon: a daemon that outlives its `up` (stopping after it
    was killed) still holds it; once the last holder dies, however, the next daemon starts at
    once."""
    with daemon_lock(tmp_path) as lock:
        assert daemon_running(tmp_path)
        with (
            pytest.raises(DaemonAlreadyRuns, match="already runs for the home"),
            daemon_lock(tmp_path, wait_seconds=0.5),
        ):
            pass
        holder = subprocess.Popen(["sleep", "600"], pass_fds=[lock])
    try:
        assert daemon_running(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert not daemon_running(tmp_path)
    with daemon_lock(tmp_path):
        pass
