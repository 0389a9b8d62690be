"""How a run keeps its record current: processing when it starts, success or error when it ends."""

import contextlib
import errno
import shutil
from collections.abc import Iterator
from pathlib import Path

from dagster import Failure, HookContext, OpExecutionContext, ResourceParam, failure_hook, op

from .. import run_tags, run_worker
from ..errors import InputError
from ..records import record_store
from ..records.adoption import adopt_run, is_adopted
from ..records.schema import RunRecord
from ..resources import RunFolders


def start_record(
    context: OpExecutionContext, folders: RunFolders, kind: str, params: dict, model: str | None
) -> RunRecord:
    """Marks the run's record processing, first creating it for a run launched without one
    (from the Dagster UI or GraphQL), so every run has a record whichever way it came. Tags the
    run with this process, for the run launcher's health check."""
    context.instance.add_run_tags(
        context.run_id, {run_tags.RUN_WORKER: run_worker.this_process(context.run_id)}
    )
    store = record_store(context.instance)
    if run_tags.RECORD_ID in context.run.tags:
        record_id = int(context.run.tags[run_tags.RECORD_ID])
    else:
        record_id = adopt_run(context.instance, store, context.run, kind, params, model)
    store.update(record_id, output_dir=str(folders.run_dir(record_id)))
    record = store.mark_processing(record_id, context.run_id)
    if record is None:  # cancelled while the queue was launching it
        raise Failure(
            description=f"run {record_id} is {store.get_run(record_id).status}, not waiting: not started",
            allow_retries=False,
        )
    folders.remove_staging(record_id)  # left behind by an earlier attempt whose worker died
    return record


def inputs_checked_at(record: RunRecord) -> float | None:
    """When the run's inputs were last found good: on submission, which checks them before it
    makes the record. A record adopted from a run launched in the Dagster UI had no such check."""
    return None if is_adopted(record) else record.created_at.timestamp()


@contextlib.contextmanager
def bad_input_fails_the_run() -> Iterator[None]:
    """Bad input fails the run with its message, and waiting will not make it better: no retry."""
    try:
        yield
    except InputError as error:
        raise Failure(description=str(error), allow_retries=False) from error


@op
def cleanup(
    context: OpExecutionContext, record_id: int, folders: ResourceParam[RunFolders]
) -> None:
    """The last op of every job: removes the staged inputs (outputs stay), marks the record a success."""
    folders.remove_staging(record_id)
    record_store(context.instance).mark_finished(record_id)


NOT_RETRIED_BAD_INPUT = "bad input does not get better by waiting"


@failure_hook(required_resource_keys={"folders"})
def record_failure(context: HookContext) -> None:
    """A failed op ends the run: its record gets the error, its staged inputs are removed."""
    run = context.instance.get_run_by_id(context.run_id)
    record_id = run.tags.get(run_tags.RECORD_ID) if run else None
    if record_id is None:  # failed before the record existed; the upkeep sensor sees it
        return
    folders: RunFolders = context.resources.folders
    folders.remove_staging(int(record_id))
    error = context.op_exception
    if isinstance(error, Failure):
        message = error.description or "the run failed"
        not_retried = None if error.allow_retries else NOT_RETRIED_BAD_INPUT
    else:
        message = f"{type(error).__name__}: {error}" if error else "the run failed"
        not_retried = None
    if _disk_full(error, folders.runs_dir):
        message = (
            f"no space left on the disk of {folders.runs_dir} ({message}); free space there: "
            "the run is tried again if its queue's attempts allow, or submit it again"
        )
    record_store(context.instance).mark_failed(int(record_id), message, not_retried)


# Less free than this on the runs folder's disk when a run failed: that is why it failed, most
# likely (a write that fails for want of space does not always say so: MMCV's image writer).
FULL_DISK_BYTES = 1 << 20


def _disk_full(error: BaseException | None, runs_dir: Path) -> bool:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(runs_dir).free < FULL_DISK_BYTES
    except OSError:
        return False
