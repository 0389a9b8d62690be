"""`detection-pipeline up`: the UI answers on this machine only, Ctrl-C stops every process it
started, and it starts again what dies."""

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

from detection_pipeline.dagster_services import DAEMON_MODULE, WEBSERVER_MODULE, daemon_running

from .conftest import (
    CLI,
    alive,
    answers,
    code_servers,
    command_line,
    descendants,
    free_port,
    make_home,
    wait_until,
)


def listening_addresses(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the processes listen on."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)
                # the kernel writes each 32-bit word in host (little-endian) order
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add((socket.inet_ntop(family, raw), int(port, 16)))
    return found


def test_up_serves_the_ui_and_stops_cleanly_on_ctrl_c(tmp_path):
    settings = make_home(tmp_path / "home")
    port = free_port()
    log = tmp_path / "up.log"
    up = subprocess.Popen(
        [CLI, "up", "--port", str(port)],
        env={**os.environ, "DAGSTER_HOME": str(settings.home)},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: f"Dagster UI: http://127.0.0.1:{port}" in log.read_text(), timeout=30)
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/server_info"), timeout=120)
        started = descendants(up.pid)
        # The webserver and the daemon share one code server: nothing else wakes beside runs.
        assert len(started) == 3, [command_line(pid) for pid in started]
        assert len(code_servers(started)) == 1
        # No login in the UI: by default nothing may listen beyond this machine.
        listening = listening_addresses(started | {up.pid})
        assert ("127.0.0.1", port) in listening
        assert {address for address, _ in listening} <= {"127.0.0.1", "::1"}, listening
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
        wait_until(lambda: not [pid for pid in started if alive(pid)], timeout=30)
    finally:
        for pid in descendants(up.pid) | {up.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def started_by(up: subprocess.Popen, module: str) -> set[int]:
    """The processes running `module` that `up` started."""
    return {pid for pid in descendants(up.pid) if module in command_line(pid)}


def start_up(settings, port: int, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [CLI, "up", "--port", str(port)],
        env={**os.environ, "DAGSTER_HOME": str(settings.home)},
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
    )


def test_up_starts_again_what_dies_and_nothing_outlives_it(tmp_path):
    """A daemon or webserver killed with kill -9 is started again (the UI answers again, the
    daemon's lock stays held); an `up` killed so leaves nothing running, and the next `up`
    starts at once (no waiting for a heartbeat to age)."""
    settings = make_home(tmp_path / "home")
    port = free_port()
    url = f"http://127.0.0.1:{port}/server_info"
    log = tmp_path / "up.log"
    up = start_up(settings, port, log)
    try:
        wait_until(lambda: answers(url), timeout=120)
        for module in (DAEMON_MODULE, WEBSERVER_MODULE):
            [killed] = started_by(up, module)
            os.kill(killed, signal.SIGKILL)
            wait_until(
                lambda m=module, k=killed: started_by(up, m) - {k}, timeout=30, state=log.read_text
            )
            assert daemon_running(settings.home)
        assert "The daemon exited (killed by SIGKILL); starting it again" in log.read_text()
        assert "The webserver exited (killed by SIGKILL); starting it again" in log.read_text()
        wait_until(lambda: answers(url), timeout=120)

        started = descendants(up.pid)
        assert len(started) == 3, [command_line(pid) for pid in started]
        up.kill()
        up.wait()
        wait_until(lambda: not [pid for pid in started if alive(pid)], timeout=30)
        assert not daemon_running(settings.home)
        up = start_up(settings, port, log)
        wait_until(lambda: answers(url), timeout=120)
        assert "waiting up to" not in log.read_text()
        assert len(started_by(up, DAEMON_MODULE)) == 1
    finally:
        for pid in descendants(up.pid) | {up.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
