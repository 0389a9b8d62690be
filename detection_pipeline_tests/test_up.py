"""`detection-pipeline up`: the UI answers, and Ctrl-C stops every process it started."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from .conftest import alive, descendants, make_home, wait_until

CLI = str(Path(sys.executable).parent / "detection-pipeline")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_up_serves_the_ui_and_stops_cleanly_on_ctrl_c(tmp_path):
    settings = make_home(tmp_path / "home")
    port = _free_port()
    log = tmp_path / "up.log"
    up = subprocess.Popen(
        [CLI, "up", "--port", str(port)],
        env={**os.environ, "DAGSTER_HOME": str(settings.home)},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: f"Dagster UI: http://127.0.0.1:{port}" in log.read_text(), timeout=30)
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/server_info"), timeout=120)
        started = descendants(up.pid)
        assert len(started) >= 3  # dagster dev, its webserver, its daemon, code servers
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
        wait_until(lambda: not [pid for pid in started if alive(pid)], timeout=30)
    finally:
        for pid in descendants(up.pid) | {up.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
