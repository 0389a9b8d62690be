"""Records for Dagster runs that were launched without one: from the Dagster UI, GraphQL, a
schedule or a sensor. Whoever sees such a run first (the upkeep sensor while it is
queued, or the run itself when it starts) makes its record; the key makes it one record."""

from dagster import DagsterInstance, DagsterRun

from .. import run_tags
from ..settings import QUEUE_OF_KIND
from .schema import RunRecord
from .store import RecordStore

ADOPTED_KEY = "dagster-run:"  # and the run's id: one record per run, whoever makes it


def adopt_run(
    instance: DagsterInstance,
    store: RecordStore,
    run: DagsterRun,
    kind: str,
    params: dict,
    model: str | None,
) -> int:
    """Makes (once) the record of a Dagster run that has none, tags the run with it, and
    returns its id."""
    queue = run.tags.get(run_tags.QUEUE, QUEUE_OF_KIND[kind])
    priority = int(run.tags.get(run_tags.PRIORITY, 0))  # what the queue launches it with
    record, _ = store.create_run(kind, queue, priority, params, model, key=ADOPTED_KEY + run.run_id)
    store.add_attempt(record.id, run.run_id)
    instance.add_run_tags(run.run_id, {run_tags.RECORD_ID: str(record.id), run_tags.QUEUE: queue})
    return record.id


def is_adopted(record: RunRecord) -> bool:
    return (record.idempotency_key or "").startswith(ADOPTED_KEY)
