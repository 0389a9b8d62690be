"""Submitting runs to the queue and following them: what the CLI (and later the sensors) use.

A submitted run gets its record first, then a queued Dagster run tagged with the record's id,
queue and priority; the daemon's QueuedRunCoordinator launches it when it is its turn.
"""

import contextlib
import sys
import time
from collections.abc import Iterator

import pydantic
from dagster import DagsterInstance, DagsterRunStatus

from .. import run_tags
from ..dagster_services import DEFINITIONS_MODULE
from ..errors import InputError
from ..jobs.detect import DetectConfig, check_inputs
from ..jobs.train import TrainConfig, check_dataset
from ..settings import QUEUE_OF_KIND, Settings
from . import record_store
from .schema import Kind, RunRecord, Status

# kind -> (job name, the op that takes the run's config, its config class)
JOBS = {
    Kind.DETECTION.value: ("detect", "prepare_inputs", DetectConfig),
    Kind.TRAINING.value: ("train", "prepare_dataset", TrainConfig),
}
FINAL_STATUSES = {Status.SUCCESS.value, Status.ERROR.value, Status.CANCELLED.value}


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
    instance: DagsterInstance, job_name: str, run_config: dict, tags: dict
) -> str:
    """Creates the Dagster run and puts it in the instance's queue; returns its run id."""
    from dagster._core.definitions.selector import JobSubsetSelector

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
        plan = location.get_execution_plan(
            remote_job, run_config, step_keys_to_execute=None, known_state=None, instance=instance
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


def _parse_config(kind: str, params: dict):
    _, _, config_class = JOBS[kind]
    try:
        return config_class(**params)
    except pydantic.ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise InputError(f"invalid {kind} parameters: {problems}") from error


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
    ) -> RunRecord:
        """Checks the inputs, records the run and queues it. Raises InputError for bad input.

        With a key, submitting again returns the first run instead of making another.
        """
        config = _parse_config(kind, params)
        if kind == Kind.DETECTION.value:
            check_inputs(config, self.store, self.settings.input_roots)
        else:
            check_dataset(config, self.settings.input_roots)
        queue = queue or QUEUE_OF_KIND[kind]
        if queue not in self.settings.queues:
            raise InputError(f"unknown queue {queue!r}; queues: {', '.join(self.settings.queues)}")
        priority = self.settings.queues[queue] if priority is None else priority
        model = params.get("model") or params.get("name")
        record, created = self.store.create_run(
            kind, queue, priority, config.model_dump(), model, key=key
        )
        if not created:
            return record
        job_name, op_name, _ = JOBS[kind]
        run_id = _queue_dagster_run(
            self.instance,
            job_name,
            {"ops": {op_name: {"config": config.model_dump()}}},
            {
                run_tags.RECORD_ID: str(record.id),
                run_tags.QUEUE: queue,
                run_tags.PRIORITY: str(priority),
            },
        )
        return self.store.add_attempt(record.id, run_id)

    def reconcile(self, record: RunRecord) -> RunRecord:
        """Brings a record that is not final in line with its ended (or vanished) Dagster run."""
        if record.status in FINAL_STATUSES or record.dagster_run_id is None:
            return record
        run = self.instance.get_run_by_id(record.dagster_run_id)
        if run is None:
            return self.store.mark_finished(record.id, error="run not found in Dagster")
        if not run.is_finished:
            return record
        # The run's own ops write its record; re-read in case they did so just now.
        record = self.store.get_run(record.id)
        if record.status in FINAL_STATUSES:
            return record
        if run.status == DagsterRunStatus.SUCCESS:
            return self.store.mark_finished(record.id)
        if run.status == DagsterRunStatus.CANCELED:
            return self.store.update(record.id, status=Status.CANCELLED.value)
        return self.store.mark_finished(
            record.id, error=f"Dagster run {run.run_id} ended {run.status.value}"
        )

    def wait(
        self, record_id: int, timeout_seconds: float | None = None, poll_seconds: float = 1.0
    ) -> RunRecord:
        """Blocks until the run ends; returns its final record."""
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        while True:
            record = self.reconcile(self.store.get_run(record_id))
            if record.status in FINAL_STATUSES:
                return record
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"run {record_id} is still {record.status} after {timeout_seconds:.0f} s"
                )
            time.sleep(poll_seconds)
