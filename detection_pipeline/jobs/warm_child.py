"""The run worker's side of the warm worker (mmdet_runner/warm_worker.py): find or start it, and
have it fork this run's MMDetection child.

There is one warm worker per MMDetection Python and device on this machine, shared by every
run of the user; it stops by itself after `idle_seconds` without work. Its socket lives in a
folder only this user can open (DETECTION_PIPELINE_RUNTIME_DIR, else one under the temp dir),
and its name also depends on this package's files, so a changed installation starts a new one.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

RUNTIME_DIR_ENV = "DETECTION_PIPELINE_RUNTIME_DIR"
START_TIMEOUT_SECONDS = 120
REPLY_BYTES = 4096


class WarmWorkerUnavailable(RuntimeError):
    pass


def runtime_dir() -> Path:
    path = Path(
        os.environ.get(RUNTIME_DIR_ENV)
        or Path(tempfile.gettempdir()) / f"detection-pipeline-{os.getuid()}"
    )
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _code_stamp() -> int:
    return max(p.stat().st_mtime_ns for p in Path(__file__).parents[1].rglob("*.py"))


def socket_path(python_executable: str, device: str) -> Path:
    key = f"{python_executable}\0{device}\0{_code_stamp()}".encode()
    return runtime_dir() / f"warm-{hashlib.sha256(key).hexdigest()[:16]}.sock"


def _device_environment(device: str) -> dict[str, str]:
    """What the warm worker of `device` starts with: only that device visible, and torch told
    not to initialise CUDA to find out whether there is one (a fork cannot use it after that)."""
    visible = "" if device == "cpu" else device.partition(":")[2] or "0"
    return {"CUDA_VISIBLE_DEVICES": visible, "PYTORCH_NVML_BASED_CUDA_CHECK": "1"}


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        conn.close()
        return None
    return conn


def _start(path: Path, python_executable: str, device: str, idle_seconds: int) -> socket.socket:
    """Connects to the warm worker, starting it first if none listens (one run at a time does)."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = _connect(path)
        if conn:
            return conn
        log = path.with_suffix(".log")
        with log.open("a") as output:
            worker = subprocess.Popen(
                [
                    python_executable,
                    "-m",
                    "detection_pipeline.mmdet_runner.warm_worker",
                    str(path),
                    "--idle-seconds",
                    str(idle_seconds),
                ],
                env={**os.environ, **_device_environment(device)},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this run; stops when idle
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while (conn := _connect(path)) is None:
            if worker.poll() is not None or time.monotonic() > deadline:
                worker.kill()
                raise WarmWorkerUnavailable(f"the warm worker did not start; see {log}")
            time.sleep(0.1)
        return conn


class WarmChild:
    """A child the warm worker forked: the part of `subprocess.Popen` the run worker uses."""

    def __init__(self, conn: socket.socket, pid: int, stdout):
        self.conn = conn
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None

    def _take_exit(self, timeout: float | None) -> None:
        if not select.select([self.conn], [], [], timeout)[0]:
            return
        data = self.conn.recv(REPLY_BYTES)
        if data:
            self.returncode = json.loads(data)["exit"]
        else:
            # The warm worker died before it could tell: make sure the child is gone too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.returncode = -signal.SIGKILL
        self.conn.close()

    def poll(self) -> int | None:
        if self.returncode is None:
            self._take_exit(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._take_exit(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"warm child {self.pid}", timeout)
        return self.returncode


def fork_child(
    python_executable: str,
    device: str,
    idle_seconds: int,
    action: str,
    spec_path: Path,
    cwd: Path,
    env: dict[str, str],
) -> WarmChild:
    """Has the warm worker fork the child for `action` on `spec_path`, as
    `python -m detection_pipeline.mmdet_runner ACTION SPEC` in `cwd` with `env` would run;
    its output (stdout and stderr) comes out of the returned child's `stdout`."""
    path = socket_path(python_executable, device)
    conn = _connect(path) or _start(path, python_executable, device, idle_seconds)
    read_end, write_end = os.pipe()
    try:
        request = {"action": action, "spec": str(spec_path), "cwd": str(cwd), "env": env}
        socket.send_fds(conn, [json.dumps(request).encode()], [write_end])
        conn.settimeout(START_TIMEOUT_SECONDS)  # it may be loading the model first
        reply = json.loads(conn.recv(REPLY_BYTES) or b'{"error": "the warm worker hung up"}')
        conn.settimeout(None)
    except (OSError, ValueError) as error:
        os.close(read_end)
        conn.close()
        raise WarmWorkerUnavailable(f"the warm worker did not take the run: {error}") from error
    finally:
        os.close(write_end)
    if "pid" not in reply:
        os.close(read_end)
        conn.close()
        raise WarmWorkerUnavailable(f"the warm worker did not take the run: {reply['error']}")
    return WarmChild(conn, reply["pid"], os.fdopen(read_end, "r"))


def stop_warm_workers() -> None:
    """Asks every warm worker in the runtime folder to stop once its children have ended."""
    for path in runtime_dir().glob("warm-*.sock"):
        conn = _connect(path)
        if conn:
            with conn:
                conn.send(json.dumps({"stop": True}).encode())
