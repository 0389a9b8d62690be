"""The MMDetection child process: `python -m detection_pipeline.mmdet_runner ACTION SPEC.json`.

Started by the run worker in a session of its own (see jobs/child_process.py). Progress goes
to stdout, which the run worker streams into the Dagster run log and the run's log file; the
summary goes back over Dagster Pipes.
"""

import argparse
import contextlib
import os
import signal
import sys
import threading
import time

from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

from .. import run_worker
from .specs import RUN_WORKER_PID_ENV, SPEC_TYPES, read_spec


def _use_device(device: str) -> str:
    """Shows the child only the device it was given; returns that device's name in the child.

    Must run before torch is imported: mmengine's Runner trains on whatever CUDA device it sees.
    """
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    os.environ["CUDA_VISIBLE_DEVICES"] = device.partition(":")[2] or "0"
    return "cuda:0"


def _die_with_parent(poll_seconds: float = 1.0) -> None:
    """Kills this process group when the run worker dies, even by SIGKILL, so no work is orphaned.

    The run worker names itself: it is not the parent of a child the warm worker forked, and
    one that died while this process was starting is gone from `getppid()` already. Its start
    time tells it from a later process given the same pid."""
    parent = int(os.environ.get(RUN_WORKER_PID_ENV, os.getppid()))
    started = run_worker.start_ticks(parent)

    def watch() -> None:
        while started is not None and run_worker.start_ticks(parent) == started:
            time.sleep(poll_seconds)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _report(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m detection_pipeline.mmdet_runner")
    parser.add_argument("action", choices=sorted(SPEC_TYPES))
    parser.add_argument("spec", help="the spec JSON the run worker wrote into the run's folder")
    args = parser.parse_args(argv)
    spec = read_spec(args.action, args.spec)
    device = _use_device(spec.device)
    _die_with_parent()

    # Outside Dagster (a run repeated by hand from its folder) there is no one to report to.
    pipes = open_dagster_pipes() if PipesEnvVarParamsLoader().is_dagster_pipes_process() else None
    with pipes or contextlib.nullcontext():
        from .checkpoints import allow_mmengine_checkpoints

        allow_mmengine_checkpoints()
        if args.action == "train":
            from .train import train

            summary = train(spec, _report)
        else:
            from .infer import infer

            summary = infer(spec, device, _report)
        if pipes:
            pipes.report_custom_message(summary)


if __name__ == "__main__":
    sys.exit(main())
