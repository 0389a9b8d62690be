"""Where the records live: the database of the Dagster instance, migrated on first use."""

import contextlib
import fcntl
import functools
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from dagster import DagsterInstance

from ..forked_engines import renewed_in_forks

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_FILE = "records.db"


def records_url(instance: DagsterInstance) -> str:
    """PostgreSQL storage: the same database. SQLite storage: a file in the instance's root."""
    postgres_url = getattr(instance.run_storage, "postgres_url", None)
    if postgres_url:
        return postgres_url
    return f"sqlite:///{Path(instance.root_directory) / SQLITE_FILE}"


def _enable_sqlite_wal(dbapi_connection, _record) -> None:
    # The CLI, the daemon and a run worker write at the same time; WAL lets readers go on.
    dbapi_connection.execute("PRAGMA journal_mode=WAL")


_engines_lock = threading.Lock()


def engine_for(url: str) -> sa.Engine:
    """One migrated engine per database and process."""
    with _engines_lock:  # threads of one process share the engine and migrate once
        return _migrated_engine(url)


@functools.cache
def _migrated_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _enable_sqlite_wal)
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    renewed_in_forks(engine)  # run workers are forked from a process that read the records
    migrate(engine)
    return engine


@contextlib.contextmanager
def _migrating(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction that no other process migrating the same database runs alongside. The
    lock is let go only after the transaction commits: another process waiting for it must
    find the tables made."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            # Released with the transaction; the number is arbitrary but fixed.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(7283190462)"))
            yield connection
        return
    with open(f"{engine.url.database}.migrating.lock", "w") as lock_file:  # SQLite: a lock file
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        with engine.begin() as connection:
            yield connection


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Upgrades the records tables to `revision`; safe to run from several processes at once."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with _migrating(engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
