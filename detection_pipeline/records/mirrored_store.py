"""Records whose every change is also written on their Dagster run, as tags.

The records live beside Dagster's tables, where the UI and GraphQL cannot see them. Written on
the record's latest Dagster run, its status, error and next try are visible in the Dagster UI,
filterable over GraphQL and readable by a CLI that has only the webserver (`--url`).
"""

from dagster import DagsterInstance, DagsterRunNotFoundError

from .. import run_tags
from .schema import RunRecord
from .store import RecordStore

# Dagster stores tag values whole; an error's first lines are what a person reads anyway.
MAX_ERROR_CHARS = 1000
RETRIED = "retried"  # the record status on the run of an attempt that a later one followed


def record_tags(record: RunRecord) -> dict[str, str]:
    tags = {run_tags.RECORD_STATUS: record.status}
    if record.error:
        tags[run_tags.ERROR] = record.error[:MAX_ERROR_CHARS]
    if record.run_at:
        tags[run_tags.NEXT_TRY] = record.run_at.isoformat()
    if record.not_retried:
        tags[run_tags.NOT_RETRIED] = record.not_retried
    if record.output_dir:
        tags[run_tags.OUTPUT_DIR] = record.output_dir
    return tags


class MirroredRecordStore(RecordStore):
    def __init__(self, url: str, instance: DagsterInstance):
        super().__init__(url)
        self._instance = instance

    def _tag(self, run_id: str | None, tags: dict[str, str]) -> None:
        if run_id:
            try:
                self._instance.add_run_tags(run_id, tags)
            except DagsterRunNotFoundError:
                pass  # deleted in Dagster: the record says so, nothing to write on

    def _update_if(self, record_id: int, condition, values: dict) -> RunRecord | None:
        record = super()._update_if(record_id, condition, values)
        if record is not None:
            self._tag(record.dagster_run_id, record_tags(record))
        return record

    def add_attempt(self, record_id: int, dagster_run_id: str) -> RunRecord:
        record = super().add_attempt(record_id, dagster_run_id)
        if len(record.dagster_run_ids) > 1:
            self._tag(record.dagster_run_ids[-2], {run_tags.RECORD_STATUS: RETRIED})
        return record
