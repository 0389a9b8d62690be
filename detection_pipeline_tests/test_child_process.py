"""The MMDetection child process: its whole process tree dies on timeout, its output is kept."""

from pathlib import Path

from dagster import instance_for_test

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
