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
"""

import argparse
import os
import sys

import torch

from ..fork_server import ForkServer
from . import __main__ as runner_main
from . import train  # noqa: F401 - imported once here rather than in every training child
from .checkpoints import allow_mmengine_checkpoints
from .infer import warm_model
from .specs import read_spec


class WarmWorker(ForkServer):
    def __init__(self, path: str, idle_seconds: float):
        super().__init__(path, idle_seconds)
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)
        allow_mmengine_checkpoints()

    def prepare(self, request: dict) -> None:
        spec = read_spec(request["action"], request["spec"])
        if request["action"] == "infer" and spec.device == "cpu":
            try:
                warm_model(spec.config, spec.checkpoint, spec.device, spec.batch_size)
            except Exception as error:  # noqa: BLE001 - the child loads it again and reports why
                print(f"could not load {spec.checkpoint}: {error}", flush=True)

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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m detection_pipeline.mmdet_runner.warm_worker")
    parser.add_argument("socket")
    parser.add_argument("--idle-seconds", type=float, default=900)
    args = parser.parse_args()
    WarmWorker(args.socket, args.idle_seconds).serve()


if __name__ == "__main__":
    main()
