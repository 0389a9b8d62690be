"""Dagster's PostgreSQL storage, keeping its connections between uses.

Dagster's PostgreSQL storages open a new connection for every call (NullPool; only the
webserver keeps one): each is a server process forked and authenticated. An idle daemon made
14 a second (428 in 30 s: its queue looks twice a second, its sensors and run monitoring every
5 s), and on a machine whose cores MMDetection keeps busy every one of them takes from it.
These storages keep a few connections per storage and process instead.

Processes fork with the storages open (run workers from their fork server): a forked process
opens connections of its own and leaves the inherited ones alone (forked_engines.py), so the
parent's stay good."""

import sqlalchemy as sa
from dagster._core.storage.config import PostgresStorageConfig
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

from ..forked_engines import renewed_in_forks
from .checked_runs import check_new_runs
from .schema_checks import RUN_STORAGE_CHECKS, SCHEDULE_STORAGE_CHECKS, remember_schema

# Per storage (runs, events, schedules) and process. The daemon's threads (queue, sensors, run
# monitoring) seldom need more at once; more are opened when they do, and closed after use.
POOL_SIZE = 2
MAX_OVERFLOW = 10
# Connections older than this are replaced (a server or proxy may drop idle ones).
POOL_RECYCLE_SECONDS = 3600


def pooled_engine(postgres_url: str, token_provider=None) -> sa.Engine:
    engine = create_pg_engine(
        postgres_url,
        token_provider,
        isolation_level="AUTOCOMMIT",
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_recycle=POOL_RECYCLE_SECONDS,
        pool_pre_ping=True,  # one that the server closed meanwhile is replaced, not used
    )
    return renewed_in_forks(engine)


class PooledPostgresStorage(DagsterPostgresStorage):
    """`storage: postgres:`, as `dagster.yaml`'s `storage: custom:`, with pooled connections."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, **kwargs):
        super().__init__(postgres_url, should_autocreate_tables, **kwargs)
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            old = storage._engine
            storage._engine = pooled_engine(postgres_url, storage._token_provider)
            old.dispose()
        remember_schema(self._run_storage, RUN_STORAGE_CHECKS)
        check_new_runs(self._run_storage)
        remember_schema(self._schedule_storage, SCHEDULE_STORAGE_CHECKS)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: PostgresStorageConfig
    ) -> "PooledPostgresStorage":
        return cls(
            pg_url_from_config(config_value),
            config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
            token_provider=get_token_provider_from_config(config_value),
        )
