"""The warm worker: a process with torch and MMDetection imported, and the models of recent runs
loaded, that forks the MMDetection child of each run.

    python -m detection_pipeline.mmdet_runner.warm_worker SOCKET --idle-seconds N

A child started fresh spends about 3 s importing torch and MMDetection and more loading its
model; a fork of this process starts with both done. The fork is the same child a fresh start
would be (`__main__.main` on the spec), in a session of its own, so a run's terminate or
timeout still kills its whole process tree and a crash stays in the child. The run worker
talks to this process over a Unix socket (jobs/warm_child.py): it sends the spec, its
environment and the pipe the child writes its output to; it gets the child's pid, then its
exit code.

This process stays single-threaded (forking a threaded process can copy a lock another thread
holds) and runs torch on one thread: OpenMP's thread pool does not survive a fork, so a child
of a parent that had started one would hang. The child gets the machine's threads back.
CUDA does not survive a fork either: this process never touches a GPU, and models stay warm
only for CPU work; a GPU child loads its model itself (its imports are still warm).
"""

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import sys
import time
import traceback

import torch

from . import __main__ as runner_main
from . import train  # noqa: F401 - imported once here rather than in every training child
from .checkpoints import allow_mmengine_checkpoints
from .infer import warm_model
from .specs import read_spec

# Runs send one small JSON message (spec path, environment): this bounds it.
MESSAGE_BYTES = 1 << 20
REQUEST_TIMEOUT_SECONDS = 10


def _reply(conn: socket.socket, message: dict) -> None:
    with contextlib.suppress(OSError):  # the run worker is gone; its child dies with it
        conn.send(json.dumps(message).encode())


def _child(request: dict, output_fd: int, threads: int) -> int:
    """What the forked child does: become the fresh child a run worker would have started."""
    os.setsid()
    for target in (1, 2):
        os.dup2(output_fd, target)
    os.close(output_fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout.reconfigure(line_buffering=True)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    torch.set_num_threads(threads)
    try:
        return runner_main.main([request["action"], request["spec"]]) or 0
    except SystemExit as error:
        return error.code if isinstance(error.code, int) else 1
    except BaseException:  # noqa: BLE001 - as a fresh Python would: print it, exit 1
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


class WarmWorker:
    def __init__(self, path: str, idle_seconds: float):
        self.path = path
        self.idle_seconds = idle_seconds
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)
        allow_mmengine_checkpoints()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket left by a worker that was killed
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(path)
        os.chmod(path, 0o600)
        self.listener.listen(8)
        self.inode = os.stat(path).st_ino
        # SIGCHLD wakes select() through this pipe, so an exit is reported at once.
        self.wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self.children: dict[int, socket.socket] = {}
        self.stopping = False

    def _still_mine(self) -> bool:
        """Whether the socket file is still this worker's (not removed, not taken over)."""
        try:
            return os.stat(self.path).st_ino == self.inode
        except FileNotFoundError:
            return False

    def _reap(self) -> None:
        while self.children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn:
                _reply(conn, {"exit": os.waitstatus_to_exitcode(status)})
                conn.close()

    def _fork(self, conn: socket.socket, request: dict, output_fd: int) -> None:
        spec = read_spec(request["action"], request["spec"])
        if request["action"] == "infer" and spec.device == "cpu":
            try:
                warm_model(spec.config, spec.checkpoint, spec.device)
            except Exception as error:  # noqa: BLE001 - the child loads it again and reports why
                print(f"could not load {spec.checkpoint}: {error}", flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for other in (self.listener, conn, *self.children.values()):
                other.close()
            os.close(self.wake_read)
            code = 1
            try:
                code = _child(request, output_fd, self.threads)
            finally:
                os._exit(code)
        os.close(output_fd)
        self.children[pid] = conn
        _reply(conn, {"pid": pid})

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(REQUEST_TIMEOUT_SECONDS)
        try:
            data, fds, _, _ = socket.recv_fds(conn, MESSAGE_BYTES, 1)
            request = json.loads(data)
        except (OSError, ValueError) as error:
            print(f"bad request: {error}", flush=True)
            conn.close()
            return
        if request.get("stop"):
            self.stopping = True
            conn.close()
            return
        if len(fds) != 1:
            _reply(conn, {"error": "a run must send the pipe its child writes to"})
            conn.close()
            return
        self._fork(conn, request, fds[0])

    def serve(self) -> None:
        print(f"warm worker {os.getpid()} ready on {self.path}", flush=True)
        idle_since = time.monotonic()
        while True:
            readable, _, _ = select.select([self.listener, self.wake_read], [], [], 1.0)
            if self.wake_read in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_read, 512)
            self._reap()
            if self.listener in readable and not self.stopping:
                self._accept()
            if self.children:
                idle_since = time.monotonic()
            elif (
                self.stopping
                or not self._still_mine()
                or time.monotonic() - idle_since > self.idle_seconds
            ):
                break
        if self._still_mine():
            os.unlink(self.path)
        print(f"warm worker {os.getpid()} stopped", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m detection_pipeline.mmdet_runner.warm_worker")
    parser.add_argument("socket")
    parser.add_argument("--idle-seconds", type=float, default=900)
    args = parser.parse_args()
    WarmWorker(args.socket, args.idle_seconds).serve()


if __name__ == "__main__":
    main()
