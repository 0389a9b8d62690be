"""What the upkeep sensor decides, tick by tick, without a daemon: Dagster runs are failed,
cancelled or deleted by hand, and each step's work, or a whole tick, is called directly."""

import datetime as dt
import json
import os
import subprocess
import time

import pytest
from dagster import DagsterInstance, DagsterRunStatus, build_sensor_context
from dagster._core.definitions.sensor_definition import SensorType
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteInstigatorOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    SensorInstigatorData,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from detection_pipeline import run_tags, run_worker
from detection_pipeline.dagster_services import DEFINITIONS_MODULE
from detection_pipeline.definitions import build_definitions
from detection_pipeline.health import health
from detection_pipeline.jobs.record_lifecycle import NOT_RETRIED_BAD_INPUT
from detection_pipeline.records import RecordNotFound
from detection_pipeline.records.service import (
    NOT_RETRIED_RUN_GONE,
    TERMINATED,
    RunService,
    _queue_dagster_run,
)
from detection_pipeline.sensors.upkeep import (
    IDLE_MESSAGE,
    UPKEEP_SENSOR,
    UpkeepFailed,
    sensor_instance,
)
from detection_pipeline.settings import QueueSettings, RetryPolicy

from .conftest import detect_config


@pytest.fixture
def idle_queue(open_queue):
    """A RunService whose Dagster runs stay queued: no daemon. Detection retries twice after
    60 s, then 120 s; the `disposable` queue deletes what used up its attempts; the `instant`
    queue retries once, at once."""
    return open_queue(
        with_daemon=False,
        queues={
            "detection": QueueSettings(retry=RetryPolicy(attempts=3, delay_seconds=60)),
            "default": QueueSettings(),
            "disposable": QueueSettings(
                retry=RetryPolicy(attempts=1, delay_seconds=60, when_exhausted="delete")
            ),
            "instant": QueueSettings(retry=RetryPolicy(attempts=2, delay_seconds=0)),
        },
    )


def submit(service, datasets, **options):
    return service.submit(
        "detection", {"images": [str(datasets / "unseen" / "images")], "model": "tiny"}, **options
    )


def fail(service, record, message="MMDetection infer failed (exit code 3): boom"):
    run = service.instance.get_run_by_id(record.dagster_run_id)
    service.instance.report_run_failed(run, message)


def test_each_active_record_follows_its_ended_or_vanished_run(idle_queue, datasets):
    failed, cancelled, terminated, deleted, queued = (
        submit(idle_queue, datasets) for _ in range(5)
    )
    fail(idle_queue, failed)
    # Cancelled in Dagster (from the UI or GraphQL) while queued, and once it was processing:
    idle_queue.store.mark_processing(terminated.id, terminated.dagster_run_id)
    for record in (cancelled, terminated):
        idle_queue.instance.report_run_canceled(
            idle_queue.instance.get_run_by_id(record.dagster_run_id)
        )
    idle_queue.instance.delete_run(deleted.dagster_run_id)

    changed = {record.id: record for record in idle_queue.reconcile_active()}

    assert set(changed) == {failed.id, cancelled.id, terminated.id, deleted.id}
    assert (changed[failed.id].status, changed[failed.id].error) == (
        "error",
        "MMDetection infer failed (exit code 3): boom",
    )
    assert changed[failed.id].retry_pending
    assert changed[cancelled.id].status == "cancelled"
    assert (changed[terminated.id].status, changed[terminated.id].error) == (
        "error",
        TERMINATED,
    )
    assert changed[terminated.id].not_retried and not changed[terminated.id].retry_pending
    assert (changed[deleted.id].status, changed[deleted.id].not_retried) == (
        "error",
        NOT_RETRIED_RUN_GONE,
    )
    assert idle_queue.store.get_run(queued.id).status == "waiting"
    assert idle_queue.reconcile_active() == []  # the next tick has nothing to do


def test_a_queued_run_launched_without_a_record_gets_one(idle_queue, datasets):
    run_id = _queue_dagster_run(
        idle_queue.instance, "detect", detect_config(datasets / "unseen" / "images", "tiny"), {}
    )

    (adopted,) = idle_queue.reconcile_active()

    # in the queue and with the priority the CLI would give it: the job's tags
    assert (adopted.kind, adopted.queue, adopted.priority) == ("detection", "detection", 10)
    assert adopted.status == "waiting"
    assert adopted.dagster_run_ids == [run_id] and adopted.model == "tiny"
    tags = idle_queue.instance.get_run_by_id(run_id).tags
    assert tags[run_tags.RECORD_ID] == str(adopted.id)
    assert idle_queue.reconcile_active() == []  # adopted once


def test_failed_runs_are_retried_with_backoff_until_their_attempts_are_used_up(
    idle_queue, datasets
):
    record = submit(idle_queue, datasets, priority=3)
    for attempt, delay in ((1, 60), (2, 120)):
        fail(idle_queue, record)
        idle_queue.reconcile_active()
        ((decided, decision),) = idle_queue.decide_retries()
        assert decided.status == "waiting" and not decided.retry_pending
        assert decided.run_at == decided.finished_at + dt.timedelta(seconds=delay)
        assert decision.startswith(f"attempt {attempt + 1} of 3 at ")
        assert idle_queue.submit_due(now=decided.run_at - dt.timedelta(seconds=1)) == []
        (record,) = idle_queue.submit_due(now=decided.run_at)
        assert (record.attempts, record.queue, record.priority) == (attempt + 1, "detection", 3)
        retry = idle_queue.instance.get_run_by_id(record.dagster_run_id)
        assert retry.status == DagsterRunStatus.QUEUED
        assert retry.parent_run_id == record.dagster_run_ids[-2]
        assert retry.tags[run_tags.PRIORITY] == "3"

    fail(idle_queue, record)
    idle_queue.reconcile_active()
    ((ended, decision),) = idle_queue.decide_retries()
    assert (ended.status, ended.attempts, ended.not_retried) == (
        "error",
        3,
        "all 3 attempts failed",
    )
    assert idle_queue.decide_retries() == []


def test_a_queue_that_says_delete_deletes_what_used_up_its_attempts(idle_queue, datasets):
    record = submit(idle_queue, datasets, queue="disposable")
    fail(idle_queue, record)
    idle_queue.reconcile_active()

    ((_, decision),) = idle_queue.decide_retries()

    assert decision == "all 1 attempts failed; deleted"
    with pytest.raises(RecordNotFound):
        idle_queue.store.get_run(record.id)
    assert idle_queue.instance.get_run_by_id(record.dagster_run_id) is None


def test_what_a_user_stopped_or_bad_input_failed_is_not_retried(idle_queue, datasets):
    bad_input, gone = submit(idle_queue, datasets), submit(idle_queue, datasets)
    idle_queue.store.mark_failed(bad_input.id, "no images", not_retried=NOT_RETRIED_BAD_INPUT)
    idle_queue.instance.delete_run(gone.dagster_run_id)
    idle_queue.reconcile_active()

    assert idle_queue.decide_retries() == []
    assert idle_queue.store.get_run(bad_input.id).not_retried == NOT_RETRIED_BAD_INPUT
    assert idle_queue.store.get_run(gone.id).status == "error"


SHORT_DELAY = dt.timedelta(seconds=0.5)


def upkeep_tick(service):
    sensor = build_definitions(service.settings).resolve_sensor_def(UPKEEP_SENSOR)
    return sensor(build_sensor_context(instance=service.instance))


def test_one_upkeep_tick_reconciles_decides_and_queues_in_that_order(idle_queue, datasets):
    failed = submit(idle_queue, datasets, queue="instant")
    fail(idle_queue, failed)

    result = upkeep_tick(idle_queue)

    # Reconciled (error), decided on (a retry at once) and queued, all in one tick.
    retried = idle_queue.store.get_run(failed.id)
    assert (retried.status, retried.attempts) == ("waiting", 2)
    assert idle_queue.instance.get_run_by_id(retried.dagster_run_id).parent_run_id == (
        failed.dagster_run_id
    )
    assert f"run {failed.id} is error" in result.skip_message
    assert f"queued run {failed.id} as Dagster run {retried.dagster_run_id}" in result.skip_message
    assert "nothing due" in upkeep_tick(idle_queue).skip_message  # the next tick is idle


def test_a_failing_upkeep_step_does_not_hold_up_the_others(idle_queue, datasets, monkeypatch):
    delayed = submit(idle_queue, datasets, run_at=dt.datetime.now(dt.UTC) + SHORT_DELAY)
    assert delayed.dagster_run_id is None  # waiting for its time, not in Dagster's queue
    time.sleep(SHORT_DELAY.total_seconds())

    def broken(service):
        raise RuntimeError("a record reconciliation cannot read")

    monkeypatch.setattr(RunService, "reconcile_active", broken)
    with pytest.raises(UpkeepFailed) as failure:
        upkeep_tick(idle_queue)

    queued = idle_queue.store.get_run(delayed.id)
    assert queued.dagster_run_id is not None  # the delayed run was queued all the same
    assert str(failure.value).startswith(
        "reconcile: RuntimeError: a record reconciliation cannot read "
        f"(done: queued run {delayed.id} as Dagster run {queued.dagster_run_id})"
    )


def test_an_idle_upkeep_tick_in_the_code_server_opens_no_instance(idle_queue, monkeypatch):
    """Dagster opens a new instance for a tick's log when the sensor asks for it: a schema check
    and new connections every 5 s. An idle tick does not ask."""
    ref = idle_queue.instance.get_ref()
    sensor = build_definitions(idle_queue.settings).resolve_sensor_def(UPKEEP_SENSOR)
    sensor(build_sensor_context(instance_ref=ref))  # opens this process's instance, once
    opened = []
    from_ref = DagsterInstance.from_ref
    monkeypatch.setattr(
        DagsterInstance,
        "from_ref",
        staticmethod(lambda *args, **kwargs: opened.append(args) or from_ref(*args, **kwargs)),
    )

    result = sensor(build_sensor_context(instance_ref=ref))

    assert result.skip_message == IDLE_MESSAGE
    assert opened == []


def test_status_shows_the_sensors_the_code_declares_and_not_ones_it_dropped(idle_queue):
    # A home an earlier version ran keeps the states of sensors it had (reconcile_runs, ...).
    repository = RemoteRepositoryOrigin(
        InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name=DEFINITIONS_MODULE)),
        "__repository__",
    )
    idle_queue.instance.add_instigator_state(
        InstigatorState(
            RemoteInstigatorOrigin(repository, "reconcile_runs"),
            InstigatorType.SENSOR,
            InstigatorStatus.RUNNING,
            SensorInstigatorData(sensor_type=SensorType.STANDARD),
        )
    )

    def sensors():
        report = health(idle_queue.instance, idle_queue.store, idle_queue.settings)
        return [(i.kind, i.name, i.running, i.last_tick_status) for i in report.instigators]

    # On before its first tick, as it is on by default.
    assert sensors() == [("sensor", UPKEEP_SENSOR, True, None)]


def test_the_health_check_fails_a_run_whose_worker_is_gone(idle_queue, datasets):
    run_id = submit(idle_queue, datasets).dagster_run_id

    def health_with_worker(**worker) -> tuple[str, str | None]:
        if worker:
            reported = {**json.loads(run_worker.this_process(run_id)), **worker}
            idle_queue.instance.add_run_tags(run_id, {run_tags.RUN_WORKER: json.dumps(reported)})
        run = idle_queue.instance.get_run_by_id(run_id)
        result = idle_queue.instance.run_launcher.check_run_worker_health(run)
        return result.status.value, result.msg

    assert health_with_worker()[0] == "RUNNING"  # starting: no worker has reported in yet
    assert health_with_worker(pid=os.getpid())[0] == "RUNNING"
    ended = subprocess.Popen(["true"])
    ended.wait()
    dead_pid = ended.pid
    assert health_with_worker(pid=dead_pid) == ("FAILED", f"run worker (pid {dead_pid}) died")
    # A pid the system gave to another process since: not the worker.
    assert health_with_worker(pid=os.getpid(), start="1")[0] == "FAILED"


def test_sensors_in_the_code_server_open_the_instance_once(idle_queue):
    """The daemon hands each evaluation an instance ref; opening an instance checks its
    storage's schema, so it is opened once per process, not once per tick."""
    ref = idle_queue.instance.get_ref()
    opened = [sensor_instance(build_sensor_context(instance_ref=ref)) for _ in range(2)]
    assert opened[0] is opened[1]
    assert opened[0].get_run_by_id("none") is None  # a working instance
    # Given an instance (tests, the bench), the sensor uses that one.
    given = build_sensor_context(instance=idle_queue.instance)
    assert sensor_instance(given) is idle_queue.instance
