"""The run worker's side of the warm worker (mmdet_runner/warm_worker.py): find or start it, and
have it fork this run's MMDetection child.

There is one warm worker per MMDetection Python and device on this machine, shared by every
run of the user; it stops by itself after `idle_seconds` without work. Its socket lives in a
folder only this user can open (fork_server.runtime_dir),
and its name also depends on this package's files, so a changed installation starts a new one.
"""

import hashlib
import os
from pathlib import Path

from ..fork_server import ForkedChild, connect_or_start, request_fork, runtime_dir


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


def fork_child(
    python_executable: str,
    device: str,
    idle_seconds: int,
    action: str,
    spec_path: Path,
    cwd: Path,
    env: dict[str, str],
) -> ForkedChild:
    """Has the warm worker fork the child for `action` on `spec_path`, as
    `python -m detection_pipeline.mmdet_runner ACTION SPEC` in `cwd` with `env` would run;
    its output (stdout and stderr) comes out of the returned child's `stdout`.
    Raises ForkServerUnavailable when the warm worker cannot be had."""
    path = socket_path(python_executable, device)
    command = [
        python_executable,
        "-m",
        "detection_pipeline.mmdet_runner.warm_worker",
        str(path),
        "--idle-seconds",
        str(idle_seconds),
    ]
    conn = connect_or_start(
        path,
        command,
        log=path.with_suffix(".log"),
        env={**os.environ, **_device_environment(device)},
        start_new_session=True,  # outlives this run; stops when idle
    )
    read_end, write_end = os.pipe()
    try:
        request = {"action": action, "spec": str(spec_path), "cwd": str(cwd), "env": env}
        pid = request_fork(conn, request, [write_end])
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return ForkedChild(conn, pid, os.fdopen(read_end, "r"))
