"""The MMDetection child process: its whole process tree dies on timeout, its output is kept."""

import os
import signal
import subprocess
from pathlib import Path

from dagster import instance_for_test

from detection_pipeline.process_group import kill_process_group
from detection_pipeline.records import record_store

from .conftest import (
    alive,
    execute_job,
    make_home,
    processes_in_group,
    python_wrapper,
    train_config,
)


def test_a_timeout_kills_mmdetection_and_everything_it_started(tmp_path, datasets):
    wrapper = python_wrapper(tmp_path)
    settings = make_home(
        tmp_path / "home",
        input_roots=[datasets],
        python_executable=str(wrapper),
        warm_worker=False,  # a new Python per run, through the wrapper
        timeout_seconds=15,
    )

    with instance_for_test(temp_dir=str(settings.home)) as instance:
        result = execute_job(
            settings,
            "train",
            run_config=train_config(datasets / "train", "slow", epochs=500),
            instance=instance,
            raise_on_error=False,
        )
        [record] = record_store(instance).list_runs()
    assert not result.success
    assert record.status == "error"
    assert "ran longer than the limit of 15 s" in record.error
    run_dir = Path(record.output_dir)
    assert not alive(int((run_dir / "grandchild.pid").read_text()))
    assert not processes_in_group(int((run_dir / "child.pid").read_text()))
    log = (run_dir / f"error_{record.id}.txt").read_text()
    assert "Checkpoints will be saved to" in log  # training had really started when it was killed
    assert not (run_dir / "staging").exists()


def test_a_hung_child_that_leads_no_process_group_is_still_killed():
    """A warm worker's child hung (here: stopped) before it made a process group of its own
    still ends when its run's timeout kills it (the fault suite's hang-child found it left)."""
    child = subprocess.Popen(["sleep", "600"])  # in this process's group, not one of its own
    os.kill(child.pid, signal.SIGSTOP)
    kill_process_group(child, grace_seconds=0.5)
    assert child.wait(timeout=10) in (-signal.SIGTERM, -signal.SIGKILL)
