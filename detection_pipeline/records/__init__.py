from dagster import DagsterInstance

from .database import records_url
from .store import RecordNotFound, RecordStore


def record_store(instance: DagsterInstance) -> RecordStore:
    """The records kept in the database of this Dagster instance."""
    return RecordStore(records_url(instance))


__all__ = ["RecordNotFound", "RecordStore", "record_store"]
