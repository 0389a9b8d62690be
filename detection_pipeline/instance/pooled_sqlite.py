"""Dagster's SQLite storage (the embedded default), keeping its connections between uses.

Dagster's SQLite storages make a new engine for every call (NullPool): a new connection to the
file, and every statement compiled anew, as SQLAlchemy caches compiled statements per engine.
Measured here: storing an event 3.3 ms that way, 0.9 ms with the engine kept; reading a run
3.7 ms, 0.6 ms. A detection run stores about 45 events, and the queue's daemon, the run worker
and the webserver read runs many times a second while it works. These storages keep an engine,
and a few connections, per database file and process instead. Transactions stay as Dagster's:
one per call, so an idle pooled connection holds no snapshot and no lock.

Run workers forked from a process that has the instance open go on with its engines, through
connections of their own (forked_engines.py).
"""

import collections
import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    SqliteStorageConfig,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from dagster.version import __version__ as DAGSTER_VERSION

from ..forked_engines import renewed_in_forks
from .checked_runs import check_new_runs
from .schema_checks import RUN_STORAGE_CHECKS, SCHEDULE_STORAGE_CHECKS, remember_schema

# Per database file. A run's own event database is one file: the daemon and the webserver
# touch many in turn, so the least recently used engines are closed beyond this many.
MAX_ENGINES = 16
POOL_SIZE = 2
MAX_OVERFLOW = 10

_engines: collections.OrderedDict[str, sa.Engine] = collections.OrderedDict()
_engines_lock = threading.Lock()


def pooled_engine(url: str) -> sa.Engine:
    """This process's engine for the SQLite database at `url`."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = renewed_in_forks(
                sa.create_engine(
                    url,
                    pool_size=POOL_SIZE,
                    max_overflow=MAX_OVERFLOW,
                    connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
                )
            )
            if len(_engines) > MAX_ENGINES:
                _engines.popitem(last=False)[1].dispose()  # one in use closes when let go
        _engines.move_to_end(url)
        return engine


class PooledSqliteRunStorage(SqliteRunStorage):
    def connect(self) -> contextlib.AbstractContextManager[sa.Connection]:
        return pooled_engine(self._conn_string).begin()  # one transaction, as Dagster's


class PooledSqliteScheduleStorage(SqliteScheduleStorage):
    def connect(self) -> contextlib.AbstractContextManager[sa.Connection]:
        return pooled_engine(self._conn_string).begin()  # one transaction, as Dagster's


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """A run's events are a database of their own, made on its first event (when the run is
    submitted): Dagster creates its tables, a statement and a sync each, and stamps alembic's
    revision, loading alembic's revision scripts twice (60 ms). Every other process that opens
    the database loads them again to check the revision (25 ms: the daemon and the run worker,
    between two runs). Here a new run's database is a copy of an empty one made once per Dagster
    version, and one that has a revision is taken as made, as Dagster's check would."""

    @contextlib.contextmanager
    def _connect(self, shard: str) -> Iterator[sa.Connection]:
        with self._db_lock:  # as Dagster's: its watcher threads share the storage
            engine = pooled_engine(self.conn_string_for_shard(shard))
            if shard not in self._initialized_dbs:
                self._make(shard, engine)
                self._initialized_dbs.add(shard)
            with engine.begin() as connection:
                yield connection

    def _make(self, shard: str, engine: sa.Engine) -> None:
        path = Path(self.path_for_shard(shard))
        if shard != INDEX_SHARD_NAME and not path.exists():
            _copy_synced(self._empty_run_database(), path)
        with engine.connect() as connection:
            if MigrationContext.configure(connection).get_current_revision():
                return
        self._initdb(engine)

    def _empty_run_database(self) -> Path:
        # Not named *.db: Dagster takes every *.db file here for a run's.
        empty = Path(self._base_dir) / f"empty-run-{DAGSTER_VERSION}.sqlite"
        if not empty.exists():
            made = empty.with_name(f"{empty.name}.{os.getpid()}")
            engine = sa.create_engine(f"sqlite:///{made}", poolclass=sa.pool.NullPool)
            self._initdb(engine)
            engine.dispose()  # the last connection's close moves its write-ahead log in
            os.replace(made, empty)
        return empty


def _copy_synced(source: Path, target: Path) -> None:
    """Copies `source` to `target` unless `target` exists, as one step: another process making
    the same run's database at once keeps its own."""
    copy = target.with_name(f"{target.name}.{os.getpid()}")
    with copy.open("wb") as out:
        out.write(source.read_bytes())
        out.flush()
        os.fsync(out.fileno())  # before any event is committed to it
    try:
        os.link(copy, target)
    except FileExistsError:
        pass
    finally:
        copy.unlink()


class PooledSqliteStorage(DagsterSqliteStorage):
    """`storage: sqlite:`, as `dagster.yaml`'s `storage: custom:`, with pooled connections."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        # Dagster's __init__ builds its own storages, each checking its schema: not called.
        self.base_dir = base_dir
        self._run_storage = PooledSqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = PooledSqliteScheduleStorage.from_local(
            _schedule_directory(base_dir)
        )
        remember_schema(self._run_storage, RUN_STORAGE_CHECKS)
        check_new_runs(self._run_storage)
        remember_schema(self._schedule_storage, SCHEDULE_STORAGE_CHECKS)
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: SqliteStorageConfig
    ) -> "PooledSqliteStorage":
        return cls.from_local(inst_data=inst_data, **config_value)
