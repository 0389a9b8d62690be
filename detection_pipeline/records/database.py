"""Where the records live: the database of the Dagster instance, migrated on first use."""

import functools
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from dagster import DagsterInstance

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


@functools.cache
def engine_for(url: str) -> sa.Engine:
    """One migrated engine per database and process."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _enable_sqlite_wal)
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    migrate(engine)
    return engine


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
