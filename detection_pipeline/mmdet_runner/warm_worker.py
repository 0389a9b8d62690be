"""The warm worker: a fork server (fork_server.py) with torch and MMDetection imported, and the
models of recent runs loaded, that forks the MMDetection child of each run.

    python -m detection_pipeline.mmdet_runner.warm_worker SOCKET --idle-seconds N

A child started fresh spends about 3 s importing torch and MMDetection and more loading its
model; a fork of this process starts with both done. The fork is the same child a fresh start
would be (`__main__.main` on the spec), in a session of its own, so a run's terminate or
timeout still kills its whole process tree and a crash stays in the child. The run worker
(jobs/warm_child.py) sends the spec, its environment and the pipe the child writes its output to.

torch runs on one thread here: OpenMP's thread pool does not survive a fork, so the child of a
parent that had started one would hang. The child gets the machine's threads back. CUDA does
not survive a fork either: this process never touches a GPU, and models stay warm only for CPU
work; a GPU child loads its model itself (its imports are still warm).

So a forked child's first batch sets up torch's threads and oneDNN's kernels for them, and its
first pass copies the pages it writes (0.07 s and 8,000 page faults of a 3.3 s run of 200
images of 512x512 on 2 cores). When a CPU detection child ends, this process therefore forks
a spare for the same model at once, which does that on blank images and waits: the next
detection request with that model, batch size included, is handed to it (otherwise it is
dropped and a child forked as before). Its setup falls between two runs, where the cores
wait on Dagster's bookkeeping, or in idle time, instead of into the next run's work.
"""

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import socket
import sys
from typing import NamedTuple

import torch

from ..fork_server import MESSAGE_BYTES, ForkServer
from . import __main__ as runner_main
from . import train  # noqa: F401 - imported once here rather than in every training child
from .checkpoints import allow_mmengine_checkpoints
from .infer import warm_model, warm_up
from .specs import read_spec


class WarmModel(NamedTuple):
    """A model as a CPU detection finds it warm here: loaded, and set up for its batch size."""

    config: str
    checkpoint: str
    batch_size: int


def warm_model_of(request: dict) -> WarmModel | None:
    """The model a request's child finds warm here; None for training, a GPU, or a spec that
    cannot be read (the child reads it itself and reports why; a run's folder may also be gone
    by the time its child ends)."""
    if request["action"] != "infer":
        return None
    try:
        spec = read_spec("infer", request["spec"])
    except (OSError, ValueError, TypeError):
        return None
    return (
        WarmModel(spec.config, spec.checkpoint, spec.batch_size) if spec.device == "cpu" else None
    )


@dataclasses.dataclass(frozen=True)
class Spare:
    """A child forked ahead of the next detection with `model`, its setup done, waiting on
    `conn` for the request."""

    pid: int
    conn: socket.socket
    model: WarmModel


class WarmWorker(ForkServer):
    def __init__(self, path: str, idle_seconds: float):
        super().__init__(path, idle_seconds)
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)
        allow_mmengine_checkpoints()
        self.spare: Spare | None = None

    def prepare(self, request: dict) -> None:
        if model := warm_model_of(request):
            try:
                warm_model(model.config, model.checkpoint, "cpu", model.batch_size)
            except Exception as error:  # noqa: BLE001 - the child loads it again and reports why
                print(f"could not load {model.checkpoint}: {error}", flush=True)

    def child(self, request: dict, fds: list[int]) -> int:
        """Becomes the fresh child a run worker would have started, writing to the run's pipe."""
        [output] = fds
        os.setsid()
        for target in (1, 2):
            os.dup2(output, target)
        os.close(output)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        sys.stdout.reconfigure(line_buffering=True)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        torch.set_num_threads(self.threads)
        return runner_main.main([request["action"], request["spec"]]) or 0

    def held_sockets(self) -> list[socket.socket]:
        return [*super().held_sockets(), *([self.spare.conn] if self.spare else [])]

    def hand_over(self, request: dict, fds: list[int]) -> int | None:
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        with spare.conn:
            if warm_model_of(request) == spare.model:
                with contextlib.suppress(OSError):  # it died: a child is forked instead
                    socket.send_fds(spare.conn, [json.dumps(request).encode()], fds)
                    return spare.pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(spare.pid, signal.SIGKILL)
        return None

    def child_exited(self, pid: int, request: dict | None) -> None:
        if self.spare and self.spare.pid == pid:  # it died waiting
            self.spare.conn.close()
            self.spare = None
        elif request and not self.spare and not self.stopping and (model := warm_model_of(request)):
            ours, its = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            pid = self.spawn(lambda: self._wait_as_spare(its, model), ours)
            its.close()
            self.spare = Spare(pid, ours, model)
            print(
                f"spare {pid} forked for {model.checkpoint} (batch {model.batch_size})", flush=True
            )

    def _wait_as_spare(self, conn: socket.socket, model: WarmModel) -> int:
        torch.set_num_threads(self.threads)
        warm_up(warm_model(model.config, model.checkpoint, "cpu"), model.batch_size)
        data, fds, _, _ = socket.recv_fds(conn, MESSAGE_BYTES, 4)
        conn.close()
        if not data:  # this server ended before a request came
            return 0
        return self.child(json.loads(data), fds)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m detection_pipeline.mmdet_runner.warm_worker")
    parser.add_argument("socket")
    parser.add_argument("--idle-seconds", type=float, default=900)
    args = parser.parse_args()
    WarmWorker(args.socket, args.idle_seconds).serve()


if __name__ == "__main__":
    main()
