"""The deployment's instance config and the embedded default written by `init`."""

import json
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from alembic.script import ScriptDirectory
from dagster import DagsterInstance, DagsterRun
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.utils import make_new_run_id
from dagster._serdes import serialize_value

from detection_pipeline.instance import (
    DEPLOYMENT_CONFIG,
    instance_config,
    opened_instance,
    write_instance_config,
)
from detection_pipeline.instance.compute_logs import FileComputeLogManager
from detection_pipeline.instance.pooled_postgres import POOL_SIZE, PooledPostgresStorage
from detection_pipeline.instance.pooled_sqlite import PooledSqliteStorage
from detection_pipeline.instance.run_coordinator import (
    DEQUEUE_INTERVAL_SECONDS,
    DEQUEUE_THREAD,
    FULL_QUEUE_LOOK_SECONDS,
)
from detection_pipeline.instance.run_worker_server import RunWorkerServer
from detection_pipeline.records import record_store
from detection_pipeline.records.database import engine_for

from .conftest import cli

# How SQLAlchemy asks SQLite and PostgreSQL for tables and columns, and where Dagster notes
# which index migrations ran.
SCHEMA_QUERIES = ("table_xinfo", "sqlite_master", "pg_catalog", "secondary_indexes")
TOP_LEVEL_CONFIG = Path(__file__).parents[1] / "dagster.yaml"


def test_the_top_level_dagster_yaml_is_the_deployment_config():
    assert TOP_LEVEL_CONFIG.resolve() == DEPLOYMENT_CONFIG.resolve()
    config = yaml.safe_load(DEPLOYMENT_CONFIG.read_text())
    assert config["storage"] == {
        "custom": {
            "module": "detection_pipeline.instance.pooled_postgres",
            "class": "PooledPostgresStorage",
            "config": {"postgres_url": {"env": "DETECTION_PIPELINE_POSTGRES_URL"}},
        }
    }
    assert config["run_coordinator"]["class"] == "SequentialRunCoordinator"
    assert config["run_coordinator"]["config"]["max_concurrent_runs"] == 1
    assert config["run_monitoring"]["enabled"] is True


def test_init_writes_an_embedded_home_with_the_same_queue(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    result = cli("init")
    assert result.returncode == 0, result.stderr
    written = yaml.safe_load((home / "dagster.yaml").read_text())
    deployment = yaml.safe_load(DEPLOYMENT_CONFIG.read_text())
    assert written["storage"]["custom"]["config"] == {"base_dir": str(home / "storage")}
    assert written["compute_logs"]["config"] == {"base_dir": str(home / "storage")}
    home_folders = ("storage", "compute_logs")
    assert {k: v for k, v in written.items() if k not in home_folders} == {
        k: v for k, v in deployment.items() if k not in home_folders
    }
    with DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.get_ref().storage, PooledSqliteStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 1
        assert instance.run_coordinator.dequeue_interval_seconds == 0.5
        # No assets here: no daemon thread that wakes only to find none beside MMDetection work.
        assert sorted(instance.get_required_daemon_types()) == [
            "BACKFILL",
            "MONITORING",
            "QUEUED_RUN_COORDINATOR",
            "SCHEDULER",
            "SENSOR",
        ]
    assert (home / "records.db").exists()
    assert (home / "data").is_dir()


def test_init_with_postgres_keeps_everything_in_that_database(tmp_path, postgres_url, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    result = cli("init", "--postgres", postgres_url)
    assert result.returncode == 0, result.stderr
    assert (
        instance_config(home, postgres_url)["storage"]
        == yaml.safe_load((home / "dagster.yaml").read_text())["storage"]
    )
    assert not (home / "records.db").exists()
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert isinstance(instance.get_ref().storage, PooledPostgresStorage)


def _sessions(postgres_admin, database: str) -> int:
    """Connections ever opened to `database`."""
    with postgres_admin.connect() as connection:
        query = "SELECT sessions FROM pg_stat_database WHERE datname = :name"
        return connection.execute(sa.text(query), {"name": database}).scalar_one()


def _backend_pid(connect) -> int:
    with connect() as connection:
        return connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()


def test_postgres_storage_keeps_its_connections_and_a_fork_opens_its_own(
    tmp_path, postgres_url, postgres_admin
):
    """Dagster's own PostgreSQL storage opens a connection (a server process) for every call.
    The records share the way forks go (a run worker is forked from a process that read them)."""
    home = tmp_path
    write_instance_config(home, postgres_url)
    database = postgres_url.rsplit("/", 1)[1]
    with DagsterInstance.from_config(str(home)) as instance:
        storages = (instance.run_storage.connect, engine_for(postgres_url).connect)
        parent_backends = [_backend_pid(connect) for connect in storages]
        before = _sessions(postgres_admin, database)
        for _ in range(20):
            instance.get_runs(limit=1)
            instance.get_instigator_state("none", "none")
        time.sleep(1)  # the server counts a session's statistics when it ends, or within a second
        assert _sessions(postgres_admin, database) - before <= POOL_SIZE

        # A forked process (a run worker) opens connections of its own, and the parent's are
        # left as they were.
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                said = json.dumps([_backend_pid(connect) for connect in storages])
                os.write(write_end, said.encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as child_said:
            child_backends = json.loads(child_said.read())
        os.waitpid(pid, 0)
        assert not set(child_backends) & set(parent_backends)
        assert [_backend_pid(connect) for connect in storages] == parent_backends


def test_sqlite_storage_keeps_its_connections_and_a_fork_opens_its_own(tmp_path):
    """Dagster's own SQLite storage opens a new connection for every call. The records share
    the way forks go (a run worker is forked from a process that has read them)."""
    write_instance_config(tmp_path)
    opened = []  # (process, database file) of every connection opened

    def count(dbapi_connection, _record) -> None:
        [(_, _, database)] = dbapi_connection.execute("PRAGMA database_list").fetchall()
        opened.append((os.getpid(), Path(database).name))

    sa.event.listen(sa.pool.Pool, "connect", count)
    try:
        with DagsterInstance.from_config(str(tmp_path)) as instance:
            run = instance.add_run(DagsterRun(job_name="job", run_id=make_new_run_id()))
            instance.report_engine_event("the run's events database is made", run)
            store = record_store(instance)
            record, _ = store.create_run("detection", "detection", 0, {})
            opened.clear()
            for _ in range(20):
                instance.get_runs(limit=1)
                instance.report_engine_event("an event", run)
                instance.get_instigator_state("none", "none")
                store.get_run(record.id)
            assert opened == []

            # A forked process (a run worker) writes through connections of its own, and the
            # parent's are left as they were.
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    instance.report_engine_event("from the child", run)
                    instance.add_run_tags(run.run_id, {"written by": "child"})
                    store.update(record.id, error="written by the child")
                    mine = sorted(
                        database for process, database in opened if process == os.getpid()
                    )
                    code = 0 if mine == sorted(["runs.db", f"{run.run_id}.db", "records.db"]) else 3
                finally:
                    os._exit(code)
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
            assert instance.get_run_by_id(run.run_id).tags["written by"] == "child"
            messages = [event.message for event in instance.all_logs(run.run_id)]
            assert messages[-1] == "from the child"
            assert store.get_run(record.id).error == "written by the child"
            assert opened == []
    finally:
        sa.event.remove(sa.pool.Pool, "connect", count)


@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_the_storages_ask_for_the_schema_once_per_process(tmp_path, storage, request):
    """Dagster's storages asked the database for its schema on every run query, new run, run
    event and sensor state: on PostgreSQL a catalog query each, five per submission."""
    postgres_url = request.getfixturevalue("postgres_url") if storage == "postgres" else None
    write_instance_config(tmp_path, postgres_url)
    statements = []

    def remember(connection, cursor, statement, *args) -> None:
        statements.append(statement)

    def schema_queries() -> list[str]:
        return [s for s in statements if any(query in s for query in SCHEMA_QUERIES)]

    sa.event.listen(sa.Engine, "before_cursor_execute", remember)
    try:
        with DagsterInstance.from_config(str(tmp_path)) as instance:
            instance.get_runs(limit=1)
            instance.get_instigator_state("none", "none")
            instance.report_run_failed(
                instance.add_run(DagsterRun(job_name="job", run_id=make_new_run_id()))
            )
            assert schema_queries()  # what this test looks for is what Dagster asks
            statements.clear()
            for _ in range(5):
                run = instance.add_run(DagsterRun(job_name="job", run_id=make_new_run_id()))
                instance.report_run_failed(run)
                instance.get_runs(limit=1)
                instance.get_run_by_id(run.run_id)
                instance.get_instigator_state("none", "none")
            assert schema_queries() == []
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", remember)


@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_forked_run_workers_inherit_the_answers_to_the_schema_checks(tmp_path, storage, request):
    """The run worker server reads a run before its first fork, so a run worker does not ask
    for the runs table's columns again (on PostgreSQL three catalog queries between runs)."""
    postgres_url = request.getfixturevalue("postgres_url") if storage == "postgres" else None
    write_instance_config(tmp_path, postgres_url)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        run = instance.add_run(DagsterRun(job_name="job", run_id=make_new_run_id()))
        instance_ref = serialize_value(instance.get_ref())
    server = RunWorkerServer(str(tmp_path / "runs.sock"), idle_seconds=float("inf"))
    server.prepare({"instance_ref": instance_ref, "run_id": run.run_id})
    server.listener.close()
    answer, child_answers = os.pipe()
    pid = os.fork()
    if pid == 0:  # as the run worker server's child: the run is the run worker's first read
        try:
            statements = []
            sa.event.listen(
                sa.Engine, "before_cursor_execute", lambda _c, _cur, sql, *_: statements.append(sql)
            )
            opened_instance(instance_ref).get_run_by_id(run.run_id)
            asked = [s for s in statements if any(query in s for query in SCHEMA_QUERIES)]
            os.write(child_answers, json.dumps({"reads": len(statements), "asked": asked}).encode())
        finally:
            os._exit(0)
    os.close(child_answers)
    os.waitpid(pid, 0)
    with os.fdopen(answer) as reply:
        found = json.loads(reply.read() or "{}")
    assert found["reads"] > 0  # the child read the run from the database
    assert found["asked"] == []


def _look(coordinator, exit_after: float | None = None, thread_name: str = DEQUEUE_THREAD):
    """Seconds one look of the dequeue daemon waits when it first asks for the queue's settings,
    and when it asks again within the look; a forked run worker exits `exit_after` seconds in."""
    waited = []

    def look() -> None:
        for _ in range(2):
            started = time.monotonic()
            coordinator.get_run_queue_config()
            waited.append(time.monotonic() - started)
        coordinator.dequeue_use_threads  # noqa: B018 - read once a look, after it chose runs

    if exit_after is not None:
        exits = threading.Timer(
            exit_after, coordinator._instance.run_launcher.run_worker_exited.set
        )
        exits.start()
    thread = threading.Thread(target=look, name=thread_name)
    thread.start()
    thread.join()
    return waited


def test_the_queue_looks_again_as_soon_as_a_run_worker_exits(tmp_path):
    write_instance_config(tmp_path)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        coordinator = instance.run_coordinator
        first, again = _look(coordinator)  # nothing ends: half a second between looks
        assert DEQUEUE_INTERVAL_SECONDS - 0.05 < first < DEQUEUE_INTERVAL_SECONDS + 0.3
        assert again < 0.05  # the same look does not wait twice
        first, _ = _look(coordinator, exit_after=0.1)
        assert first < DEQUEUE_INTERVAL_SECONDS - 0.2
        # Anyone else asking (the webserver, a sensor) never waits.
        assert max(_look(coordinator, thread_name="webserver")) < 0.05
        # With the one run the queue allows at work in a forked worker, the daemon looks when
        # it exits, or after FULL_QUEUE_LOOK_SECONDS.
        coordinator._instance.run_launcher.forked_workers_running = 1
        first, _ = _look(coordinator, exit_after=2.0)
        assert 1.9 < first < 2.5
        first, _ = _look(coordinator)
        assert FULL_QUEUE_LOOK_SECONDS - 0.1 < first < FULL_QUEUE_LOOK_SECONDS + 0.5


def _schema(database: Path) -> tuple[list, tuple]:
    with sqlite3.connect(database) as connection:
        tables = connection.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name")
        return tables.fetchall(), connection.execute("SELECT * FROM alembic_version").fetchone()


def test_a_runs_events_database_is_made_as_dagster_makes_it_without_loading_migrations(
    tmp_path, monkeypatch
):
    """Dagster loads alembic's revision scripts to make a run's events database (60 ms), and
    again in every process that opens it (25 ms)."""
    write_instance_config(tmp_path)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        first = instance.add_run(DagsterRun(job_name="job", run_id=make_new_run_id()))
        instance.report_engine_event("the first run's first event", first)
    with DagsterInstance.from_config(str(tmp_path)) as instance:  # as another process would
        loads = []
        load = ScriptDirectory.from_config
        monkeypatch.setattr(ScriptDirectory, "from_config", lambda c: loads.append(c) or load(c))
        second = instance.add_run(DagsterRun(job_name="job", run_id=make_new_run_id()))
        instance.report_engine_event("the second run's first event", second)
        instance.report_engine_event("the first run's second event", first)
        assert loads == []
        assert [event.message for event in instance.all_logs(first.run_id)] == [
            "the first run's first event",
            "the first run's second event",
        ]
        made = Path(instance.event_log_storage.path_for_shard(second.run_id))
    monkeypatch.undo()
    dagsters = SqliteEventLogStorage(str(tmp_path / "dagster's"))
    with dagsters.run_connection(second.run_id):
        pass
    assert _schema(made) == _schema(Path(dagsters.path_for_shard(second.run_id)))


def test_what_a_run_prints_is_captured_in_files_without_mirroring_processes(tmp_path):
    """Dagster's local compute log manager starts a `tail` and a Python per stream and run."""
    write_instance_config(tmp_path)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        manager = instance.compute_log_manager
        assert isinstance(manager, FileComputeLogManager)
        children = Path(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/children")
        before = set(children.read_text().split())  # earlier tests' processes may live on
        with manager.capture_logs(["run", "step"]):
            print("to stdout", flush=True)
            print("to stderr", file=sys.stderr, flush=True)
            started = set(children.read_text().split()) - before
        assert started == set()
        assert manager.is_capture_complete(["run", "step"])
        captured = manager.get_log_data(["run", "step"])
        assert (captured.stdout, captured.stderr) == (b"to stdout\n", b"to stderr\n")
        assert Path(manager.get_captured_local_path(["run", "step"], "out")).is_relative_to(
            tmp_path / "storage"
        )
