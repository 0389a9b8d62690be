"""The fork servers: MMDetection children forked by the warm worker (torch, MMDetection and the
model loaded), still killable as a whole and isolated from each other; run workers forked by the
run worker server; and runs that still run the slow way when neither can be had."""

import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, instance_for_test

from detection_pipeline import run_tags, run_worker
from detection_pipeline.fork_server import RUNTIME_DIR_ENV
from detection_pipeline.jobs.warm_child import fork_child, socket_path
from detection_pipeline.mmdet_runner.specs import DRAWN_DIR, InferSpec, write_spec
from detection_pipeline.records.service import TERMINATED, RunService

from .conftest import (
    alive,
    command_line,
    detect_config,
    execute_job,
    make_home,
    proc_stat,
    processes_in_group,
    register_as,
    wait_until,
)


def detection(images: Path) -> dict:
    return {"images": [str(images)], "model": "tiny"}


WARM_CHILD = re.compile(r"started by the warm worker \(pid (\d+)\)")


def warm_child_pid(instance, run_id: str) -> int | None:
    """The pid of the run's MMDetection child, as the run's log names it."""
    for event in instance.all_logs(run_id):
        if found := WARM_CHILD.search(event.user_message or ""):
            return int(found[1])
    return None


def detections_of(run_dir: Path) -> list[list[dict]]:
    images = json.loads((run_dir / "detections.json").read_text())["images"]
    return [image["detections"] for image in sorted(images, key=lambda image: image["file"])]


def assert_same_detections(first: list[list[dict]], second: list[list[dict]]) -> None:
    """The same boxes, up to float noise (thread counts differ between the two processes)."""
    assert [len(image) for image in first] == [len(image) for image in second]
    for image_a, image_b in zip(first, second):
        for a, b in zip(image_a, image_b):
            assert a["class"] == b["class"] and abs(a["score"] - b["score"]) < 1e-3
            assert max(abs(x - y) for x, y in zip(a["box"], b["box"])) < 0.05


def test_a_warm_child_detects_what_a_new_python_does_and_the_model_stays_loaded(
    trained_model, datasets
):
    settings, model = trained_model
    images = datasets / "unseen" / "images"
    warm_log = socket_path(settings.python_executable, "cpu").with_suffix(".log")
    with instance_for_test(temp_dir=str(settings.home)) as instance:

        def detect(**options):
            result = execute_job(
                settings.model_copy(update=options),
                "detect",
                detect_config(images, "tiny"),
                instance,
            )
            assert result.success
            run = instance.get_run_by_id(result.run_id)
            return result.run_id, Path(settings.runs_dir / run.tags[run_tags.RECORD_ID])

        _, cold_dir = detect(warm_worker=False)
        first_run, first_dir = detect()
        loaded = f"Loads checkpoint by local backend from path: {model.checkpoint}"  # mmengine's
        loads_before = warm_log.read_text().count(loaded)
        second_run, second_dir = detect()
        assert warm_log.read_text().count(loaded) == loads_before  # still loaded
        children = [warm_child_pid(instance, run_id) for run_id in (first_run, second_run)]
    assert None not in children and children[0] != children[1]  # one child per run
    assert_same_detections(detections_of(cold_dir), detections_of(first_dir))
    assert detections_of(first_dir) == detections_of(second_dir)
    assert sum(map(len, detections_of(second_dir))) > 0


@pytest.fixture
def warm_queue(open_queue):
    return open_queue(python_executable=sys.executable, warm_worker=True)


def start_warm_blocker(queue, many_images) -> tuple[int, int, int]:
    """A long detection run with its warm child at work: (record id, child pid, warm worker pid)."""
    record = queue.submit("detection", detection(many_images))
    run_id = wait_until(lambda: queue.store.get_run(record.id).dagster_run_id, timeout=120)
    child = wait_until(lambda: warm_child_pid(queue.instance, run_id), timeout=120)
    running_log = Path(queue.store.get_run(record.id).output_dir) / f"running_{record.id}.txt"
    wait_until(lambda: "detected on" in running_log.read_text(), timeout=60)  # at work
    warm_worker = int(proc_stat(child)[1])  # its parent
    assert int(proc_stat(child)[2]) == child  # in a process group of its own
    run = queue.instance.get_run_by_id(run_id)
    worker = run_worker.reported_worker(run_id, run.tags)["pid"]
    assert "run_worker_server" in command_line(int(proc_stat(worker)[1]))  # a forked worker
    return record.id, child, warm_worker


@pytest.mark.parametrize("open_queue", ["sqlite"], indirect=True)
def test_terminate_kills_the_warm_child_and_the_warm_worker_serves_the_next_run(
    warm_queue, many_images, datasets
):
    record_id, child, warm_worker = start_warm_blocker(warm_queue, many_images)
    terminated = warm_queue.terminate(record_id)
    assert terminated.status == "error" and terminated.error == TERMINATED
    wait_until(lambda: not processes_in_group(child), timeout=30)
    assert alive(warm_worker)

    after = warm_queue.submit("detection", detection(datasets / "unseen" / "images"))
    assert warm_queue.wait(after.id, timeout_seconds=300).status == "success"
    next_child = warm_child_pid(
        warm_queue.instance, warm_queue.store.get_run(after.id).dagster_run_id
    )
    assert next_child != child and alive(warm_worker)


@pytest.mark.parametrize("open_queue", ["sqlite"], indirect=True)
def test_a_crashed_warm_child_fails_only_its_own_run(warm_queue, many_images, datasets):
    record_id, child, warm_worker = start_warm_blocker(warm_queue, many_images)
    os.kill(child, signal.SIGSEGV)
    failed = warm_queue.wait(record_id, timeout_seconds=120)
    assert failed.status == "error" and "killed by SIGSEGV, exit code -11" in failed.error, (
        failed.error
    )
    assert alive(warm_worker)
    after = warm_queue.submit("detection", detection(datasets / "unseen" / "images"))
    assert warm_queue.wait(after.id, timeout_seconds=300).status == "success"


@pytest.mark.parametrize("open_queue", ["sqlite"], indirect=True)
def test_a_killed_run_worker_takes_its_warm_child_along(warm_queue, many_images):
    record_id, child, warm_worker = start_warm_blocker(warm_queue, many_images)
    run = warm_queue.instance.get_run_by_id(warm_queue.store.get_run(record_id).dagster_run_id)
    worker = run_worker.reported_worker(run.run_id, run.tags)
    os.kill(worker["pid"], signal.SIGKILL)
    wait_until(lambda: not processes_in_group(child), timeout=30)
    assert alive(warm_worker)
    assert warm_queue.wait(record_id, timeout_seconds=120).status == "error"


@pytest.mark.parametrize("open_queue", ["sqlite"], indirect=True)
def test_runs_start_the_slow_way_when_no_fork_server_can_be_had(
    open_queue, datasets, tmp_path, monkeypatch
):
    no_folder = tmp_path / "not-a-folder"
    no_folder.write_text("")  # no sockets can go in there
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(no_folder))
    queue = open_queue(python_executable=sys.executable, warm_worker=True)
    record = queue.submit("detection", detection(datasets / "unseen" / "images"))
    done = queue.wait(record.id, timeout_seconds=300)
    assert done.status == "success", done.error
    # an engine event's text is its Dagster event's message
    messages = " ".join(
        event.user_message or (event.dagster_event and event.dagster_event.message) or ""
        for event in queue.instance.all_logs(done.dagster_run_id)
    )
    assert "the code server starts the run worker instead" in messages
    assert "starting MMDetection in a new Python instead" in messages
    assert len(detections_of(Path(done.output_dir))) == 16


def test_the_launcher_knows_at_once_when_a_run_worker_it_forked_exits(
    tmp_path, datasets, trained_model, monkeypatch
):
    """What lets the queue start the next run without waiting for its next look."""
    model = trained_model[1]
    settings = make_home(tmp_path / "home", input_roots=[datasets, Path(model.checkpoint).parent])
    monkeypatch.setenv("DAGSTER_HOME", str(settings.home))
    with DagsterInstance.get() as instance:  # no daemon: this process launches, as one would
        service = RunService(instance, settings)
        register_as(service.store, "tiny", model)
        record = service.submit("detection", detection(datasets / "unseen" / "images"))
        exited = instance.run_launcher.run_worker_exited
        instance.launch_run(record.dagster_run_id, workspace=None)
        assert not exited.is_set()  # working
        assert exited.wait(timeout=300)
        run = instance.get_run_by_id(record.dagster_run_id)
    assert run.status == DagsterRunStatus.SUCCESS
    assert run_worker.is_alive(run_worker.reported_worker(run.run_id, run.tags)) is False


def test_the_next_detection_with_a_model_goes_to_a_spare_already_set_up_for_it(
    tmp_path, datasets, trained_model, monkeypatch
):
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(tmp_path / "runtime"))  # a warm worker of its own
    model = trained_model[1]
    images = sorted(str(p) for p in (datasets / "unseen" / "images").iterdir())
    warm_log = socket_path(sys.executable, "cpu").with_suffix(".log")

    def spares() -> list[int]:
        """The spares the warm worker forked, as its log names them, oldest first."""
        text = warm_log.read_text() if warm_log.exists() else ""
        return [int(pid) for pid in re.findall(r"spare (\d+) forked for", text)]

    def detect(name: str, batch_size: int) -> int:
        """The pid of the child that detected; its outputs in tmp_path/name."""
        spec = InferSpec(
            config=model.config,
            checkpoint=model.checkpoint,
            images=images,
            out_dir=str(tmp_path / name),
            batch_size=batch_size,
        )
        (tmp_path / name / DRAWN_DIR).mkdir(parents=True)
        spec_path = write_spec(spec, tmp_path / f"{name}.json")
        child = fork_child(sys.executable, "cpu", 60, "infer", spec_path, tmp_path, {})
        output = child.stdout.read()
        assert child.wait(timeout=120) == 0, output
        return child.pid

    first = detect("first", 4)
    [spare] = wait_until(spares, timeout=30)
    assert first != spare
    assert detect("second", 4) == spare  # handed the request
    assert detections_of(tmp_path / "second") == detections_of(tmp_path / "first")

    # Another batch size is not what the spare set up for: it is dropped, a child forked.
    [_, next_spare] = wait_until(lambda: len(spares()) == 2 and spares(), timeout=30)
    third = detect("third", 2)
    assert third != next_spare and not alive(next_spare)
    assert_same_detections(detections_of(tmp_path / "first"), detections_of(tmp_path / "third"))

    # A spare does not outlive its warm worker, even one killed outright.
    last_spare = wait_until(lambda: len(spares()) == 3 and spares()[-1], timeout=30)
    warm_worker = int(proc_stat(last_spare)[1])
    os.kill(warm_worker, signal.SIGKILL)
    wait_until(lambda: not alive(last_spare), timeout=30)
