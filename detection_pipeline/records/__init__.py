from dagster import DagsterInstance

from .database import records_url
from .mirrored_store import MirroredRecordStore
from .store import RecordNotFound, RecordStore


def record_store(instance: DagsterInstance) -> RecordStore:
    """The records kept in the database of this Dagster instance, mirrored on its runs."""
    return MirroredRecordStore(records_url(instance), instance)


__all__ = ["RecordNotFound", "RecordStore", "record_store"]
