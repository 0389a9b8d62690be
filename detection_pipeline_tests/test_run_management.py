"""Priorities, delayed runs, cancel, terminate and delete, with a real daemon and real
MMDetection, on SQLite and PostgreSQL."""

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from detection_pipeline.errors import NotAllowed
from detection_pipeline.health import health
from detection_pipeline.records import RecordNotFound
from detection_pipeline.records.schema import utcnow
from detection_pipeline.records.service import TERMINATED, RunService
from detection_pipeline.sensors.upkeep import TICK_SECONDS

from .conftest import CLI, alive, make_home, processes_in_group, register_as, wait_until


def detection(images, **extra) -> dict:
    return {"images": [str(images)], "model": "tiny"} | extra


def start_blocker(queue, many_images, model="tiny"):
    """A long detection run, waited for until its MMDetection child is at work."""
    record = queue.submit("detection", detection(many_images, model=model))
    wait_until(lambda: queue.store.get_run(record.id).status == "processing", timeout=120)
    run_dir = Path(queue.store.get_run(record.id).output_dir)
    wait_until(lambda: (run_dir / "grandchild.pid").exists(), timeout=60)
    return queue.store.get_run(record.id)


def test_a_higher_priority_run_goes_before_earlier_lower_ones(queue, datasets, many_images):
    images = datasets / "unseen" / "images"
    blocker = start_blocker(queue, many_images)
    low = [queue.submit("detection", detection(images), priority=1) for _ in range(2)]
    high = queue.submit("detection", detection(images), priority=50)
    next_up = [run.record_id for run in health(queue.instance, queue.store, queue.settings).queued]
    assert next_up == [high.id, low[0].id, low[1].id]  # what `status` prints
    finished = {r.id: queue.wait(r.id, timeout_seconds=600) for r in [blocker, *low, high]}
    assert {r.status for r in finished.values()} == {"success"}
    order = sorted(finished.values(), key=lambda r: r.started_at)
    assert [r.id for r in order] == [blocker.id, high.id, low[0].id, low[1].id]
    assert queue.instance.get_run_by_id(high.dagster_run_id).tags["dagster/priority"] == "50"


def test_the_sensor_queues_a_delayed_run_when_it_is_due_and_not_before(queue, datasets):
    run_at = utcnow() + dt.timedelta(seconds=8)
    record = queue.submit("detection", detection(datasets / "unseen" / "images"), run_at=run_at)
    assert record.status == "waiting" and record.run_at == run_at and record.dagster_run_ids == []
    wait_until(lambda: utcnow() >= run_at - dt.timedelta(seconds=1), timeout=10)
    assert queue.store.get_run(record.id).dagster_run_ids == []  # not before its time
    done = queue.wait(record.id, timeout_seconds=300)
    assert done.status == "success" and done.started_at >= run_at
    [dagster_run] = queue.instance.get_run_records(RunsFilter(run_ids=done.dagster_run_ids))
    late = dagster_run.create_timestamp - run_at
    assert late <= dt.timedelta(seconds=TICK_SECONDS + 5)  # within one tick (and the daemon's loop)


def test_a_due_run_is_queued_once_in_priority_order(tmp_path, datasets, trained_model, monkeypatch):
    model = trained_model[1]
    settings = make_home(tmp_path / "home", input_roots=[datasets, Path(model.checkpoint).parent])
    monkeypatch.setenv("DAGSTER_HOME", str(settings.home))
    with DagsterInstance.get() as instance:  # no daemon: queued runs just wait in the queue
        service = RunService(instance, settings)
        register_as(service.store, "tiny", model)
        soon = utcnow() + dt.timedelta(seconds=2)
        images = detection(datasets / "unseen" / "images")
        low = service.submit("detection", images, run_at=soon, priority=1)
        high = service.submit(
            "detection", images, run_at=soon + dt.timedelta(seconds=1), priority=9
        )
        later = service.submit("detection", images, run_at=soon + dt.timedelta(hours=1))
        assert service.submit_due() == []
        queued = service.submit_due(soon + dt.timedelta(seconds=5))
        assert [r.id for r in queued] == [high.id, low.id]
        assert service.submit_due(soon + dt.timedelta(seconds=5)) == []  # queued once
        assert [r.status for r in instance.get_runs()] == [DagsterRunStatus.QUEUED] * 2
        assert service.store.get_run(later.id).dagster_run_ids == []


def test_cancel_takes_waiting_runs_off_the_queue_and_refuses_processing_ones(
    queue, datasets, many_images
):
    blocker = start_blocker(queue, many_images)
    queued = queue.submit("detection", detection(datasets / "unseen" / "images"))
    delayed = queue.submit(
        "detection",
        detection(datasets / "unseen" / "images"),
        run_at=utcnow() + dt.timedelta(hours=1),
    )
    with pytest.raises(NotAllowed, match=f"detection-pipeline terminate {blocker.id}"):
        queue.cancel(blocker.id)
    assert queue.cancel(queued.id).status == "cancelled"
    assert queue.cancel(delayed.id).status == "cancelled"
    assert queue.instance.get_run_by_id(queued.dagster_run_id).status == DagsterRunStatus.CANCELED
    assert queue.wait(blocker.id, timeout_seconds=600).status == "success"
    # the queue went on without them
    assert queue.submit_due(utcnow() + dt.timedelta(hours=2)) == []
    # An attempt counts once queued: the queued run had one, the delayed one none.
    for record, attempts in ((queued, 1), (delayed, 0)):
        after = queue.store.get_run(record.id)
        assert (after.status, after.started_at, after.attempts) == ("cancelled", None, attempts)


def test_terminate_kills_the_whole_mmdetection_tree_and_keeps_partial_outputs(queue, many_images):
    blocker = start_blocker(queue, many_images)
    run_dir = Path(blocker.output_dir)
    child = int((run_dir / "child.pid").read_text())
    grandchild = int((run_dir / "grandchild.pid").read_text())
    assert alive(child) and alive(grandchild)
    waiting = queue.submit("detection", detection(many_images))
    with pytest.raises(
        NotAllowed, match=f"nothing to terminate; `detection-pipeline cancel {waiting.id}`"
    ):
        queue.terminate(waiting.id)
    queue.cancel(waiting.id)
    terminated = queue.terminate(blocker.id)
    assert terminated.status == "error" and terminated.error == TERMINATED
    wait_until(lambda: not processes_in_group(child) and not alive(grandchild), timeout=30)
    assert queue.instance.get_run_by_id(blocker.dagster_run_id).status in (
        DagsterRunStatus.CANCELED,
        DagsterRunStatus.FAILURE,
    )
    assert (run_dir / "infer_spec.json").exists()  # partial outputs stay until deleted
    assert (run_dir / f"error_{blocker.id}.txt").exists()
    assert (
        queue.store.get_run(blocker.id).error == TERMINATED
    )  # the run's own report did not replace it


def test_delete_removes_a_runs_files_records_and_dagster_runs_and_nothing_else(
    queue, datasets, many_images, tmp_path
):
    images = datasets / "unseen" / "images"
    done = queue.wait(queue.submit("detection", detection(images)).id, timeout_seconds=300)
    failed = queue.wait(
        queue.submit("detection", detection(images, device="cuda:0")).id, timeout_seconds=300
    )
    blocker = start_blocker(queue, many_images)
    waiting = queue.submit("detection", detection(images))
    cancelled = queue.cancel(queue.submit("detection", detection(images)).id)

    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the run's")
    os.symlink(outside, Path(done.output_dir) / "link-out")
    os.symlink(outside / "keep.txt", Path(done.output_dir) / "file-link-out")

    with pytest.raises(NotAllowed, match="is processing and cannot be deleted"):
        queue.delete(blocker.id)
    for record in (done, failed, waiting, cancelled):
        queue.delete(record.id)
        with pytest.raises(RecordNotFound):
            queue.store.get_run(record.id)
        assert not (queue.settings.runs_dir / str(record.id)).exists()
        for run_id in record.dagster_run_ids:
            assert queue.instance.get_run_by_id(run_id) is None
    assert (outside / "keep.txt").read_text() == "not the run's"
    assert queue.store.get_run(blocker.id).status == "processing"
    assert queue.wait(blocker.id, timeout_seconds=600).status == "success"
    assert Path(blocker.output_dir).exists()


def test_the_same_key_from_8_submitters_at_once_makes_one_run(queue, datasets):
    command = [CLI, "detect", "--images", str(datasets / "unseen" / "images"), "--model", "tiny"]
    submitters = [
        subprocess.Popen([*command, "--key", "once", "--json"], stdout=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    records = [json.loads(p.communicate(timeout=120)[0]) for p in submitters]
    assert all(p.returncode == 0 for p in submitters)
    assert len({r["id"] for r in records}) == 1
    assert len(queue.store.list_runs()) == 1
    dagster_runs = queue.instance.get_runs()
    assert len(dagster_runs) == 1
    assert queue.wait(records[0]["id"], timeout_seconds=300).status == "success"


def test_a_model_in_use_cannot_be_deleted(queue, trained_model, many_images, datasets):
    tiny = trained_model[1]
    folder = queue.settings.models_dir / "mine" / "run-0"
    folder.mkdir(parents=True)
    files = {name: shutil.copy(getattr(tiny, name), folder) for name in ("config", "checkpoint")}
    register_as(queue.store, "mine", tiny, **files)
    blocker = start_blocker(queue, many_images, model="mine")
    fine_tuning = queue.submit(
        "training",
        {"dataset": str(datasets / "train"), "name": "other", "base_model": "mine"},
        run_at=utcnow() + dt.timedelta(hours=1),
    )
    with pytest.raises(
        NotAllowed, match=rf"used by waiting or processing runs \[{blocker.id}, {fine_tuning.id}\]"
    ):
        queue.delete_model("mine")
    queue.terminate(blocker.id)
    queue.cancel(fine_tuning.id)
    assert queue.delete_model("mine") == 1
    assert queue.store.find_model("mine") is None
    assert not (queue.settings.models_dir / "mine").exists()
    assert Path(tiny.checkpoint).exists()  # other models' files are untouched
