"""The run worker's side of the MMDetection child process: start, stream, time-limit, kill.

The child runs in a session (process group) of its own, so terminating a run, a timeout or a
failure kills MMDetection and everything it started, not just the direct child: Dagster sends
SIGINT to the run worker only, and Pipes forwards it to its direct child only.
"""

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dagster import (
    Failure,
    MetadataValue,
    OpExecutionContext,
    PipesTempFileContextInjector,
    open_pipes_session,
)

from ..fork_server import ForkedChild, ForkServerUnavailable
from ..mmdet_runner.specs import RUN_WORKER_PID_ENV, InferSpec, TrainSpec
from ..process_group import kill_process_group
from .pipes_messages import PIPES_MESSAGES_FILE, RunFolderMessageReader
from .warm_child import fork_child

if TYPE_CHECKING:
    from ..resources import MMDetRunner

LOG_FLUSH_SECONDS = 1.0
FAILURE_TAIL_LINES = 30


def _read_lines(stream, lines: queue.Queue, log_file) -> None:
    for line in iter(stream.readline, ""):
        log_file.write(line)
        log_file.flush()
        lines.put(line.rstrip("\n"))


def _drain(lines: queue.Queue) -> list[str]:
    drained = []
    while not lines.empty():
        drained.append(lines.get_nowait())
    return drained


def log_path(run_dir: Path, record_id: int, succeeded: bool) -> Path:
    return run_dir / f"{'succ' if succeeded else 'error'}_{record_id}.txt"


def running_log_path(run_dir: Path, record_id: int) -> Path:
    """The child's log while it runs; renamed to succ_ or error_ when it ends."""
    return run_dir / f"running_{record_id}.txt"


def close_abandoned_log(run_dir: Path, record_id: int, reason: str) -> None:
    """The log of a run whose worker died before it could rename it: it becomes the error log,
    with the reason at its end."""
    running = running_log_path(run_dir, record_id)
    if running.exists():
        with running.open("a") as log_file:
            log_file.write(f"\n{reason}\n")
        running.rename(log_path(run_dir, record_id, succeeded=False))


def _start_child(
    context: OpExecutionContext,
    runner: "MMDetRunner",
    spec: TrainSpec | InferSpec,
    spec_path: Path,
    run_dir: Path,
    env: dict[str, str],
) -> subprocess.Popen | ForkedChild:
    """The child, forked by the warm worker, or a new Python when there is none to be had."""
    if runner.warm_worker:
        try:
            child = fork_child(
                runner.python_executable,
                spec.device,
                runner.warm_idle_seconds,
                spec.action,
                spec_path,
                run_dir,
                env,
            )
        except (ForkServerUnavailable, OSError) as error:
            context.log.warning(f"{error}; starting MMDetection in a new Python instead")
        else:
            context.log.info(
                f"MMDetection {spec.action} started by the warm worker (pid {child.pid})"
            )
            return child
    command = [
        runner.python_executable,
        "-m",
        "detection_pipeline.mmdet_runner",
        spec.action,
        str(spec_path),
    ]
    process = subprocess.Popen(
        command,
        cwd=run_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    context.log.info(f"MMDetection {spec.action} started (pid {process.pid}): {' '.join(command)}")
    return process


def _exit_failure(action: str, returncode: int, tail: list[str]) -> str:
    """What went wrong with a child that exited with `returncode` (negative: a signal's)."""
    last = tail[-1] if tail else "no output"
    if returncode >= 0:
        return f"MMDetection {action} failed (exit code {returncode}): {last}"
    name = signal.Signals(-returncode).name
    if -returncode == signal.SIGKILL:
        name += (
            " (the kernel's out-of-memory killer sends it when memory runs out: see `dmesg`; "
            "lower batch_size or patch_size if so)"
        )
    return f"MMDetection {action} was killed by {name}, exit code {returncode}; last output: {last}"


def run_mmdetection_child(
    context: OpExecutionContext,
    runner: "MMDetRunner",
    spec: TrainSpec | InferSpec,
    spec_path: Path,
    run_dir: Path,
    record_id: int,
) -> dict:
    """Runs `spec` in a child process; returns the summary the child reported over Pipes.

    The child's output goes to the Dagster run log (in one-second batches) and to
    succ_<record_id>.txt or error_<record_id>.txt in the run's folder.
    """
    timeout_seconds = runner.timeout_seconds
    running_log = running_log_path(run_dir, record_id)
    lines: queue.Queue = queue.Queue()
    tail: list[str] = []
    failure: str | None = None
    succeeded = False
    try:
        with (
            open_pipes_session(
                context=context,
                context_injector=PipesTempFileContextInjector(),
                message_reader=RunFolderMessageReader(str(run_dir / PIPES_MESSAGES_FILE)),
            ) as session,
            running_log.open("w") as log_file,
        ):
            env = {
                **os.environ,
                **session.get_bootstrap_env_vars(),
                "PYTHONUNBUFFERED": "1",
                RUN_WORKER_PID_ENV: str(os.getpid()),
            }
            process = _start_child(context, runner, spec, spec_path, run_dir, env)
            reader = threading.Thread(
                target=_read_lines, args=(process.stdout, lines, log_file), daemon=True
            )
            reader.start()

            def flush() -> None:
                batch = _drain(lines)
                tail[:] = (tail + batch)[-FAILURE_TAIL_LINES:]
                if batch:
                    context.log.info("\n".join(batch))

            deadline = time.monotonic() + timeout_seconds
            try:
                while process.poll() is None:
                    if time.monotonic() > deadline:
                        failure = (
                            f"MMDetection {spec.action} ran longer than the limit of {timeout_seconds:.0f} s "
                            "and was killed; raise timeout_seconds in detection_pipeline.yaml if it needs longer"
                        )
                        break
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=LOG_FLUSH_SECONDS)  # returns as the child exits
                    flush()
            finally:
                # Also after a normal exit: nothing the child started may outlive it.
                kill_process_group(process)
                reader.join(timeout=10)
                flush()
            if failure is None and process.returncode != 0:
                failure = _exit_failure(spec.action, process.returncode, tail)
            summaries = session.get_custom_messages()

        succeeded = failure is None
    finally:
        running_log.rename(log_path(run_dir, record_id, succeeded))
    if failure:
        raise Failure(
            description=failure,
            metadata={
                "output (last lines)": MetadataValue.md("```\n" + "\n".join(tail) + "\n```"),
                "log file": MetadataValue.path(str(log_path(run_dir, record_id, False))),
            },
        )
    return summaries[-1] if summaries else {}
