"""Retries with backoff, and runs whose worker dies, with a real daemon and real MMDetection,
on SQLite and PostgreSQL."""

import itertools
import os
import signal
import time
from pathlib import Path

from dagster import DagsterRunStatus, RunsFilter

from detection_pipeline import run_tags, run_worker
from detection_pipeline.records import RecordNotFound
from detection_pipeline.records.service import NOT_RETRIED_TERMINATED, TERMINATED
from detection_pipeline.sensors.upkeep import TICK_SECONDS
from detection_pipeline.settings import QueueSettings, RetryPolicy

from .conftest import flaky_python, processes_in_group, wait_until

# The daemon runs sensors and the queue in loops of its own: allow a couple of seconds for them.
DAEMON_SLACK_SECONDS = 3
MONITORING_POLL_SECONDS = 5  # detection_pipeline/instance/dagster.yaml


def queues(**retry_by_queue: RetryPolicy) -> dict:
    return {
        "detection": QueueSettings(
            priority=10, retry=retry_by_queue.pop("detection", RetryPolicy())
        ),
        "default": QueueSettings(),
        **{name: QueueSettings(retry=retry) for name, retry in retry_by_queue.items()},
    }


def detection(images) -> dict:
    return {"images": [str(images)], "model": "tiny"}


def dagster_runs(queue, record):
    by_id = {
        r.dagster_run.run_id: r
        for r in queue.instance.get_run_records(RunsFilter(run_ids=record.dagster_run_ids))
    }
    return [by_id[run_id] for run_id in record.dagster_run_ids]


def test_a_run_that_fails_twice_is_retried_with_backoff_and_succeeds(
    open_queue, tmp_path, datasets
):
    retry = RetryPolicy(attempts=3, delay_seconds=4, backoff_factor=3)
    queue = open_queue(
        python_executable=str(flaky_python(tmp_path, failures=2)), queues=queues(detection=retry)
    )
    record = queue.submit("detection", detection(datasets / "unseen" / "images"), priority=7)
    done = queue.wait(record.id, timeout_seconds=300)

    assert (done.status, done.attempts, done.queue, done.priority) == ("success", 3, "detection", 7)
    runs = dagster_runs(queue, done)
    assert [r.dagster_run.status for r in runs] == [DagsterRunStatus.FAILURE] * 2 + [
        DagsterRunStatus.SUCCESS
    ]
    for run in runs:  # every attempt in the same queue, with the same priority and record
        assert run.dagster_run.tags[run_tags.QUEUE] == "detection"
        assert run.dagster_run.tags[run_tags.PRIORITY] == "7"
        assert run.dagster_run.tags[run_tags.RECORD_ID] == str(record.id)
    # Dagster re-executions of the failed run: the UI shows the attempts as one group.
    first, second, third = (r.dagster_run for r in runs)
    assert (second.parent_run_id, third.parent_run_id) == (first.run_id, second.run_id)
    assert third.root_run_id == first.run_id

    # Each retry was queued after its delay (4 s, then 12 s) and within a sensor tick of it, or,
    # for a delay shorter than a tick, within a tick of the upkeep sensor seeing the failure.
    gaps = []
    for attempt, (failed, retried) in enumerate(itertools.pairwise(runs), start=1):
        failed_at = queue.instance.get_run_stats(failed.dagster_run.run_id).end_time
        gap = retried.create_timestamp.timestamp() - failed_at
        gaps.append(round(gap, 1))
        delay = retry.delay_after(attempt)
        latest = max(delay, TICK_SECONDS) + TICK_SECONDS + DAEMON_SLACK_SECONDS
        assert delay - 1 <= gap <= latest, gaps
    print(f"retry delays {[retry.delay_after(n) for n in (1, 2)]} s, measured {gaps} s")


def test_a_run_out_of_attempts_fails_or_is_deleted_as_its_queue_says(
    open_queue, tmp_path, datasets
):
    queue = open_queue(
        python_executable=str(flaky_python(tmp_path, failures=99)),
        queues=queues(
            detection=RetryPolicy(attempts=2, delay_seconds=1),
            disposable=RetryPolicy(attempts=2, delay_seconds=1, when_exhausted="delete"),
        ),
    )
    images = detection(datasets / "unseen" / "images")
    kept = queue.submit("detection", images)
    deleted = queue.submit("detection", images, queue="disposable")

    failed = queue.wait(kept.id, timeout_seconds=300)
    assert (failed.status, failed.attempts, failed.retry_pending) == ("error", 2, False)
    assert failed.not_retried == "all 2 attempts failed"
    assert "MMDetection infer failed" in failed.error

    def gone():
        try:
            return queue.store.get_run(deleted.id) and False
        except RecordNotFound:
            return True

    wait_until(gone, timeout=120)
    assert not Path(queue.settings.runs_dir / str(deleted.id)).exists()
    assert queue.instance.get_runs(RunsFilter(tags={run_tags.RECORD_ID: str(deleted.id)})) == []


def test_a_terminated_run_is_not_retried(open_queue, many_images):
    queue = open_queue(queues=queues(detection=RetryPolicy(attempts=3, delay_seconds=0)))
    record = queue.submit("detection", detection(many_images))
    wait_until(lambda: queue.store.get_run(record.id).status == "processing", timeout=120)
    terminated = queue.terminate(record.id)
    time.sleep(2 * TICK_SECONDS + DAEMON_SLACK_SECONDS)  # the upkeep sensor has had its chance
    after = queue.store.get_run(record.id)
    assert (after.status, after.error, after.not_retried) == (
        "error",
        TERMINATED,
        NOT_RETRIED_TERMINATED,
    )
    assert after.dagster_run_ids == terminated.dagster_run_ids and after.attempts == 1


def test_a_run_whose_worker_is_killed_fails_within_a_poll_and_a_tick_then_is_retried(
    open_queue, many_images
):
    queue = open_queue(queues=queues(detection=RetryPolicy(attempts=2, delay_seconds=1)))
    record = queue.submit("detection", detection(many_images))
    wait_until(lambda: queue.store.get_run(record.id).status == "processing", timeout=120)
    run_dir = Path(queue.store.get_run(record.id).output_dir)
    wait_until(lambda: (run_dir / "grandchild.pid").exists(), timeout=60)  # MMDetection at work
    child = int((run_dir / "child.pid").read_text())
    run = queue.instance.get_run_by_id(record.dagster_run_id)
    worker = run_worker.reported_worker(run.run_id, run.tags)
    assert run_worker.is_alive(worker)

    os.kill(worker["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    failed = wait_until(
        lambda: (r := queue.store.get_run(record.id)).attempts == 1 and r.error and r,
        timeout=120,
        poll=0.2,
    )
    noticed = time.monotonic() - killed_at
    assert "run worker" in failed.error and "died" in failed.error
    assert noticed <= MONITORING_POLL_SECONDS + TICK_SECONDS + DAEMON_SLACK_SECONDS, noticed
    wait_until(lambda: not processes_in_group(child), timeout=30)  # its MMDetection died too
    assert failed.error in (run_dir / f"error_{record.id}.txt").read_text()  # its log is kept
    print(f"a killed run worker's record said error {noticed:.1f} s after the kill")

    done = queue.wait(record.id, timeout_seconds=300)
    assert (done.status, done.attempts, len(done.dagster_run_ids)) == ("success", 2, 2)
    first = queue.instance.get_run_by_id(done.dagster_run_ids[0])
    assert first.status == DagsterRunStatus.FAILURE
