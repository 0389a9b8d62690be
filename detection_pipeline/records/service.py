"""Submitting runs to the queue and following them: what the CLI (and later the sensors) use.

A submitted run gets its record first, then a queued Dagster run tagged with the record's id,
queue and priority; the daemon's QueuedRunCoordinator launches it when it is its turn.
"""

import contextlib
import dataclasses
import datetime as dt
import json
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pydantic
from dagster import (
    AssetMaterialization,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunsFilter,
)

from .. import run_tags
from ..dagster_services import DEFINITIONS_MODULE
from ..detections import DETECTIONS_FILE, rethreshold, write_outputs
from ..errors import InputError, NotAllowed, validation_problems
from ..jobs.child_process import close_abandoned_log
from ..jobs.detect import DetectConfig, check_detection_inputs
from ..jobs.train import TrainConfig, check_training_inputs
from ..mmdet_runner.safe_config import check_config
from ..mmdet_runner.specs import CHECKPOINT_FILE, CONFIG_FILE
from ..models import check_model_name, model_asset_key
from ..settings import QUEUE_OF_KIND, Settings
from . import record_store
from .adoption import adopt_run
from .files import remove_model_folder, remove_run_folder
from .schema import ACTIVE_STATUSES, FINAL_STATUSES, Kind, RunRecord, Status, utcnow


@dataclasses.dataclass(frozen=True)
class JobOfKind:
    job_name: str
    config_op: str  # the op that takes the run's config
    config_class: type
    check_inputs: Callable  # (config, store, input roots); raises InputError


JOBS = {
    Kind.DETECTION.value: JobOfKind(
        "detect", "prepare_inputs", DetectConfig, check_detection_inputs
    ),
    Kind.TRAINING.value: JobOfKind("train", "prepare_dataset", TrainConfig, check_training_inputs),
}
TERMINATED = "terminated by user"
NOT_RETRIED_TERMINATED = "a user stopped it"
NOT_RETRIED_RUN_GONE = "its Dagster run no longer exists"
# The message Dagster fails a run with when it has nothing better to say.
FAILED_FROM_OUTSIDE = "This run has been marked as failed from outside the execution context."
# A record is due this long after a submitter starts queueing it, so a submitter that dies
# between making the record and queueing its Dagster run loses nothing: the run is queued later.
QUEUEING_LEASE = dt.timedelta(minutes=5)


@contextlib.contextmanager
def _code_location(instance: DagsterInstance) -> Iterator:
    # Private Dagster API, as `dagster job launch` uses it: loading the definitions in this
    # process avoids starting a code server just to create a run.
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name=DEFINITIONS_MODULE),
        location_name=DEFINITIONS_MODULE,
    )
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as process_context:
        workspace = process_context.create_request_context()
        yield workspace, workspace.get_code_location(DEFINITIONS_MODULE)


def _queue_dagster_run(
    instance: DagsterInstance,
    job_name: str,
    run_config: dict,
    tags: dict,
    parent_run: DagsterRun | None = None,
) -> str:
    """Creates the Dagster run and puts it in the instance's queue; returns its run id.

    With a parent run, the new run is its re-execution (all steps, the parent's config), so the
    Dagster UI shows the attempts together."""
    from dagster._core.definitions.selector import JobSubsetSelector
    from dagster._core.execution.plan.resume_retry import ReexecutionStrategy

    with _code_location(instance) as (workspace, location):
        repository = next(iter(location.get_repositories().values()))
        remote_job = location.get_job(
            JobSubsetSelector(
                location_name=location.name,
                repository_name=repository.name,
                job_name=job_name,
                op_selection=None,
            )
        )
        if parent_run is not None:
            run = instance.create_reexecuted_run(
                request_context=workspace,
                parent_run=parent_run,
                code_location=location,
                remote_job=remote_job,
                strategy=ReexecutionStrategy.ALL_STEPS,
                extra_tags=tags,
            )
        else:
            plan = location.get_execution_plan(
                remote_job,
                run_config,
                step_keys_to_execute=None,
                known_state=None,
                instance=instance,
            )
            run = instance.create_run(
                job_name=job_name,
                run_id=None,
                run_config=run_config,
                resolved_op_selection=None,
                step_keys_to_execute=None,
                op_selection=None,
                status=None,
                root_run_id=None,
                parent_run_id=None,
                tags={**remote_job.tags, **tags},
                job_snapshot=remote_job.job_snapshot,
                execution_plan_snapshot=plan.execution_plan_snapshot,
                parent_job_snapshot=remote_job.parent_job_snapshot,
                remote_job_origin=remote_job.get_remote_origin(),
                job_code_origin=remote_job.get_python_origin(),
                asset_selection=None,
                asset_check_selection=None,
                asset_graph=repository.asset_graph,
            )
        instance.submit_run(run.run_id, workspace)
    return run.run_id


KIND_OF_JOB = {job.job_name: kind for kind, job in JOBS.items()}


def run_config(kind: str, params: dict) -> dict:
    """The Dagster run config of a `kind` run with `params`."""
    return {"ops": {JOBS[kind].config_op: {"config": params}}}


def params_of(kind: str, config: dict) -> dict:
    """The parameters in a `kind` run's Dagster run config: `run_config` read back."""
    return config.get("ops", {}).get(JOBS[kind].config_op, {}).get("config", {})


def parse_params(kind: str, params: dict):
    try:
        return JOBS[kind].config_class(**params)
    except pydantic.ValidationError as error:
        raise InputError(f"invalid {kind} parameters: {validation_problems(error)}") from error


def model_of(params: dict) -> str | None:
    """The model a detection run uses, or the one a training run registers."""
    return params.get("model") or params.get("name")


def _has_current_run(record: RunRecord) -> bool:
    """Whether the record is in Dagster's hands: not final, and not waiting for its time (a
    delay, or the next try, whose Dagster run is yet to be made)."""
    return (
        record.status in ACTIVE_STATUSES
        and record.run_at is None
        and record.dagster_run_id is not None
    )


def _processing(record: RunRecord, run: DagsterRun | None) -> bool:
    """Processing, or launched by the queue and about to say so."""
    launched = (
        run is not None
        and not run.is_finished
        and run.status
        not in (
            DagsterRunStatus.QUEUED,
            DagsterRunStatus.NOT_STARTED,
        )
    )
    return record.status == Status.PROCESSING.value or (
        record.status == Status.WAITING.value and launched
    )


class RunService:
    def __init__(self, instance: DagsterInstance, settings: Settings):
        self.instance = instance
        self.settings = settings
        self.store = record_store(instance)

    def submit(
        self,
        kind: str,
        params: dict,
        queue: str | None = None,
        priority: int | None = None,
        key: str | None = None,
        run_at: dt.datetime | None = None,
    ) -> RunRecord:
        """Checks the inputs, records the run and queues it; a run_at in the future leaves it
        waiting for the upkeep sensor instead. Raises InputError for bad input.

        With a key, submitting again returns the first run instead of making another.
        """
        checked_at = utcnow()  # before the check: the run reads again what changed after it
        config = parse_params(kind, params)
        JOBS[kind].check_inputs(config, self.store, self.settings.input_roots)
        queue = queue or QUEUE_OF_KIND[kind]
        if queue not in self.settings.queues:
            raise InputError(f"unknown queue {queue!r}; queues: {', '.join(self.settings.queues)}")
        priority = self.settings.queues[queue].priority if priority is None else priority
        now = utcnow()
        delayed = run_at is not None and run_at > now
        record, created = self.store.create_run(
            kind,
            queue,
            priority,
            config.model_dump(),
            model_of(params),
            run_at=run_at if delayed else now + QUEUEING_LEASE,
            key=key,
            created_at=checked_at,
        )
        if not created or delayed:
            return record
        return self._enqueue(record)

    def _enqueue(self, record: RunRecord) -> RunRecord:
        """Creates the record's Dagster run in the instance's queue: its first, or a
        re-execution of its last attempt. A run that cannot be queued fails its record."""
        job_name = JOBS[record.kind].job_name
        tags = {
            run_tags.RECORD_ID: str(record.id),
            run_tags.QUEUE: record.queue,
            run_tags.PRIORITY: str(record.priority),
        }
        try:
            run_id = _queue_dagster_run(
                self.instance,
                job_name,
                run_config(record.kind, record.params),
                tags,
                parent_run=self._dagster_run(record),
            )
        except Exception as error:
            self.store.mark_failed(record.id, f"could not queue the run: {error}")
            raise
        return self.store.add_attempt(record.id, run_id)

    def submit_due(self, now: dt.datetime | None = None) -> list[RunRecord]:
        """Queues the delayed runs and retries whose time has come, highest priority first."""
        now = now or utcnow()
        return [
            self._enqueue(claimed)
            for record in self.store.due_runs(now)
            if (claimed := self.store.claim_due(record.id, now, QUEUEING_LEASE))
        ]

    def _dagster_run(self, record: RunRecord) -> DagsterRun | None:
        """The Dagster run of the record's latest attempt, if it has one."""
        return self.instance.get_run_by_id(record.dagster_run_id) if record.dagster_run_id else None

    def cancel(self, record_id: int) -> RunRecord:
        """Takes a waiting run off the queue (Dagster's, or the delayed runs')."""
        record = self.get_run(record_id)
        run = self._dagster_run(record) if _has_current_run(record) else None
        if _processing(record, run):
            raise NotAllowed(
                f"run {record_id} is already processing and cannot be cancelled; "
                f"stop it with `detection-pipeline terminate {record_id}`"
            )
        if record.status in FINAL_STATUSES:
            raise NotAllowed(
                f"run {record_id} has already ended ({record.status}); nothing to cancel"
            )
        cancelled = self.store.transition(
            record_id, {Status.WAITING.value}, status=Status.CANCELLED.value, finished_at=utcnow()
        )
        if run is not None:
            # Should the queue launch it meanwhile, the run finds its record cancelled and stops.
            self.instance.run_coordinator.cancel_run(run.run_id)
        return cancelled or self.store.get_run(record_id)

    def terminate(self, record_id: int, timeout_seconds: float = 120) -> RunRecord:
        """Stops a processing run: Dagster interrupts its worker, which kills the MMDetection
        process group; waits for the run to end."""
        record = self.get_run(record_id)
        if not _processing(record, self._dagster_run(record)):
            hint = (
                f"; `detection-pipeline cancel {record_id}` takes it off the queue"
                if record.status == Status.WAITING.value
                else ""
            )
            raise NotAllowed(
                f"run {record_id} is {record.status}, not processing: nothing to terminate{hint}"
            )
        # First, so that the run's own failure report does not replace the reason.
        self.store.mark_failed(record_id, TERMINATED, not_retried=NOT_RETRIED_TERMINATED)
        self.instance.run_coordinator.cancel_run(record.dagster_run_id)
        deadline = time.monotonic() + timeout_seconds
        while not self.instance.get_run_by_id(record.dagster_run_id).is_finished:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"run {record_id} was asked to stop but has not after {timeout_seconds:.0f} s; "
                    "Dagster's run monitoring fails it when its cancel timeout passes"
                )
            time.sleep(0.5)
        return self.store.get_run(record_id)

    def delete(self, record_id: int) -> None:
        """Removes a run that is not processing: its folder, its Dagster runs, its record."""
        record = self.get_run(record_id)
        if record.status == Status.WAITING.value:
            record = self.cancel(record_id)
        if record.status == Status.PROCESSING.value:
            raise NotAllowed(
                f"run {record_id} is processing and cannot be deleted; "
                f"`detection-pipeline terminate {record_id}` stops it first"
            )
        remove_run_folder(self.settings.runs_dir, record_id)
        for run_id in record.dagster_run_ids:
            if self.instance.get_run_by_id(run_id):
                self.instance.delete_run(run_id)
        self.store.delete_run(record_id)

    def export_detections(self, record_id: int, score_threshold: float) -> Path:
        """A successful detection run's outputs made again at another score threshold, in a
        folder of the run's own (deleted with the run); returns that folder."""
        record = self.store.get_run(record_id)
        if record.kind != Kind.DETECTION.value or record.status != Status.SUCCESS.value:
            raise NotAllowed(
                f"run {record_id} is a {record.status} {record.kind} run: only successful "
                "detection runs have detections to export"
            )
        if not 0 <= score_threshold <= 1:
            raise InputError(f"score threshold {score_threshold} is not between 0 and 1")
        run_dir = self.settings.runs_dir / str(record_id)
        detections = json.loads((run_dir / DETECTIONS_FILE).read_text())
        folder = run_dir / f"threshold_{score_threshold:g}"
        write_outputs(rethreshold(detections, score_threshold), folder)
        return folder

    def delete_model(self, name: str) -> int:
        """Removes every version of a registered model; returns how many there were.

        Refused while a waiting or processing run uses it: a detection run with it, or a
        training run fine-tuning it."""
        active = [r for status in ACTIVE_STATUSES for r in self.store.list_runs(status=status)]
        users = sorted(
            r.id
            for r in active
            if (r.kind == Kind.DETECTION.value and (r.model or "").partition(":")[0] == name)
            or (r.params or {}).get("base_model", "").partition(":")[0] == name
        )
        if users:
            raise NotAllowed(
                f"model {name} is used by waiting or processing runs {users}; "
                "cancel them or wait for them to end"
            )
        versions = self.store.delete_models(name)
        if not versions:
            raise NotAllowed(f"no model named {name!r}; `detection-pipeline models` lists them")
        remove_model_folder(self.settings.models_dir, name)
        self.instance.wipe_assets([model_asset_key(name)])
        return versions

    def register_model(self, name: str, config: Path, checkpoint: Path, classes: list[str]):
        """Registers a model trained elsewhere as the next version of `name`: copies of its
        config, once it is found to be data (mmengine executes configs), and of its checkpoint,
        once torch loads it as weights alone (a pickle could run code). Raises InputError."""
        from ..mmdet_runner.checkpoints import check_checkpoint

        check_model_name(name)
        if not classes or not all(classes):
            raise InputError("name the model's classes, in its order: --classes dump,tire")
        check_config(config)
        check_checkpoint(checkpoint)
        folder = self.settings.models_dir / name / f"registered-{uuid.uuid4().hex[:12]}"
        folder.mkdir(parents=True)
        model = self.store.register_model(
            name,
            classes=classes,
            config=str(shutil.copy(config, folder / CONFIG_FILE)),
            checkpoint=str(shutil.copy(checkpoint, folder / CHECKPOINT_FILE)),
            metrics={"registered_from": str(checkpoint)},
        )
        self.instance.report_runless_asset_event(
            AssetMaterialization(
                asset_key=model_asset_key(name),
                description=f"registered from {checkpoint}",
                metadata={"version": model.version, "classes": ", ".join(classes)},
            )
        )
        return model

    def get_run(self, record_id: int) -> RunRecord:
        """The record, brought in line with its Dagster run first."""
        return self.reconcile(self.store.get_run(record_id))

    def list_runs(self, status: str | None = None, queue: str | None = None) -> list[RunRecord]:
        """Records, oldest first, each brought in line with its Dagster run."""
        return [self.reconcile(r) for r in self.store.list_runs(status=status, queue=queue)]

    def reconcile(self, record: RunRecord) -> RunRecord:
        """Brings a record that is not final in line with its ended (or vanished) Dagster run."""
        if not _has_current_run(record):
            return record
        return self._reconcile_with(record, self._dagster_run(record)) or record

    def _reconcile_with(self, record: RunRecord, run: DagsterRun | None) -> RunRecord | None:
        """The record brought in line with its run; None when there was nothing to change."""
        if run is not None and not run.is_finished:
            return None
        if run is None:
            return self.store.mark_failed(
                record.id, "run not found in Dagster", not_retried=NOT_RETRIED_RUN_GONE
            )
        if run.status == DagsterRunStatus.SUCCESS:
            return self.store.mark_finished(record.id)
        if run.status == DagsterRunStatus.CANCELED:
            if record.status == Status.PROCESSING.value:  # terminated from the UI or GraphQL
                return self.store.mark_failed(
                    record.id, TERMINATED, not_retried=NOT_RETRIED_TERMINATED
                )
            return self.store.transition(
                record.id, ACTIVE_STATUSES, status=Status.CANCELLED.value, finished_at=utcnow()
            )
        reason = self._failure_reason(run)
        if record.output_dir:
            close_abandoned_log(Path(record.output_dir), record.id, reason)
        return self.store.mark_failed(record.id, reason)

    def _failure_reason(self, run: DagsterRun) -> str:
        """Dagster's message for the run's failure. When the code server finds a run worker
        dead, it fails the run with a generic message and says how the worker died in the
        engine event just before."""
        failures = self._last_events(run, DagsterEventType.RUN_FAILURE, 1)
        if not failures:
            return f"Dagster run {run.run_id} ended {run.status.value}"
        failure = failures[0]
        if failure.event_log_entry.message != FAILED_FROM_OUTSIDE:
            return failure.event_log_entry.message
        before = [
            event
            for event in self._last_events(run, DagsterEventType.ENGINE_EVENT, 5)
            if event.storage_id < failure.storage_id
        ]
        return (
            f"run worker died: {before[0].event_log_entry.message}"
            if before
            else FAILED_FROM_OUTSIDE
        )

    def _last_events(self, run: DagsterRun, event_type: DagsterEventType, limit: int) -> list:
        return list(
            self.instance.get_records_for_run(
                run.run_id, of_type=event_type, ascending=False, limit=limit
            ).records
        )

    def reconcile_active(self) -> list[RunRecord]:
        """Brings every waiting or processing record in line with Dagster, and gives a record to
        each queued run launched without one; returns the records changed or made.

        Costs what the active records and queued runs cost, however many runs have ended."""
        changed = [self.store.get_run(record_id) for record_id in self._adopt_queued_runs()]
        records = list(filter(_has_current_run, self.store.active_runs()))
        run_ids = [record.dagster_run_id for record in records]
        # (An empty run_ids filter would match every run.)
        found = self.instance.get_runs(RunsFilter(run_ids=run_ids)) if run_ids else []
        runs = {run.run_id: run for run in found}
        for record in records:
            if updated := self._reconcile_with(record, runs.get(record.dagster_run_id)):
                changed.append(updated)
        return changed

    def _adopt_queued_runs(self) -> list[int]:
        queued = self.instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.QUEUED]))
        adopted = []
        for run in queued:
            if run_tags.RECORD_ID in run.tags or run.job_name not in KIND_OF_JOB:
                continue
            kind = KIND_OF_JOB[run.job_name]
            params = params_of(kind, run.run_config)
            adopted.append(
                adopt_run(self.instance, self.store, run, kind, params, model_of(params))
            )
        return adopted

    def decide_retries(self) -> list[tuple[RunRecord, str]]:
        """For each failed run the upkeep sensor has not seen: a retry after its queue's delay,
        or the end (kept as an error, or deleted) when its attempts are used up. Returns each
        record with what was decided."""
        decided = []
        for record in self.store.retry_pending_runs():
            policy = self.settings.queue(record.queue).retry
            if record.attempts < policy.attempts:
                next_try = record.finished_at + dt.timedelta(
                    seconds=policy.delay_after(record.attempts)
                )
                settled = self.store.settle_retry(
                    record.id, status=Status.WAITING.value, run_at=next_try
                )
                decision = (
                    f"attempt {record.attempts + 1} of {policy.attempts} at {next_try:%H:%M:%S} UTC"
                )
            else:
                settled = self.store.settle_retry(
                    record.id, not_retried=f"all {policy.attempts} attempts failed"
                )
                decision = f"all {policy.attempts} attempts failed"
                if settled and policy.when_exhausted == "delete":
                    self.delete(record.id)
                    decision += "; deleted"
            if settled:
                decided.append((settled, decision))
        return decided

    def wait(
        self, record_id: int, timeout_seconds: float | None = None, poll_seconds: float = 1.0
    ) -> RunRecord:
        """Blocks until the run ends, retries included, and its Dagster run with it (the run
        marks its record a success in its last op, a moment before Dagster's run ends); returns
        its final record."""
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        while True:
            record = self.get_run(record_id)
            run = self._dagster_run(record)
            ended = record.status in FINAL_STATUSES and not record.retry_pending
            if ended and (run is None or run.is_finished):
                return record
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"run {record_id} is still {record.status} after {timeout_seconds:.0f} s"
                )
            time.sleep(poll_seconds)
