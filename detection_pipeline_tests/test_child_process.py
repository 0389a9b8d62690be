"""The MMDetection child process: its whole process tree dies on timeout, its output is kept."""

from pathlib import Path

from dagster import instance_for_test

from detection_pipeline.definitions import build_resources
from detection_pipeline.jobs.train import train
from detection_pipeline.records import record_store
from detection_pipeline.resources import MMDetRunner

from .conftest import alive, make_home, processes_in_group, python_wrapper, train_config


def test_a_timeout_kills_mmdetection_and_everything_it_started(tmp_path, datasets):
    settings = make_home(tmp_path / "home", input_roots=[datasets])
    wrapper = python_wrapper(tmp_path)
    resources = {
        **build_resources(settings),
        "runner": MMDetRunner(python_executable=str(wrapper), timeout_seconds=15),
    }

    with instance_for_test(temp_dir=str(settings.home)) as instance:
        result = train.execute_in_process(
            run_config=train_config(datasets / "train", "slow", epochs=500),
            instance=instance,
            resources=resources,
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
