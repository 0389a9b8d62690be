"""Run records and the model registry on SQLite and on PostgreSQL, beside Dagster's own tables."""

import concurrent.futures
import multiprocessing
import time

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from dagster import DagsterInstance

from detection_pipeline.instance import write_instance_config
from detection_pipeline.records import RecordNotFound, RecordStore, record_store
from detection_pipeline.records.database import migrate, records_url
from detection_pipeline.records.schema import VERSION_TABLE, Base


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    return request.getfixturevalue("postgres_url")


def test_a_record_goes_from_waiting_to_success_or_error(database_url):
    store = RecordStore(database_url)
    good, created = store.create_run("detection", "detection", 10, {"images": ["a"]}, model="m")
    bad, _ = store.create_run("training", "default", 0, {"dataset": "d"}, model="n")
    assert created and good.status == "waiting" and good.attempts == 0

    store.mark_processing(good.id, "run-1")
    processing = store.get_run(good.id)
    assert processing.status == "processing" and processing.attempts == 1 and processing.started_at
    store.mark_finished(good.id)
    store.mark_processing(bad.id, "run-2")
    store.mark_failed(bad.id, "it broke")

    done, failed = store.get_run(good.id), store.get_run(bad.id)
    assert (done.status, done.error, done.dagster_run_id) == ("success", None, "run-1")
    assert (failed.status, failed.error, failed.retry_pending) == ("error", "it broke", True)
    assert [r.id for r in store.retry_pending_runs()] == [bad.id]
    assert done.finished_at >= done.started_at >= done.created_at
    assert [r.id for r in store.list_runs(status="error")] == [bad.id]
    assert [r.id for r in store.list_runs(queue="detection")] == [good.id]
    assert done.to_dict()["dagster_run_id"] == "run-1"
    with pytest.raises(RecordNotFound, match="no run with id 999"):
        store.get_run(999)


def test_the_same_key_never_makes_two_records(database_url):
    store = RecordStore(database_url)
    store.create_run("detection", "detection", 0, {}, key="warm-up")  # tables exist before the race

    def submit(_):
        return store.create_run("detection", "detection", 0, {}, key="same")[0].id

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(submit, range(8)))
    assert len(ids) == 1
    assert len(store.list_runs()) == 2


def test_models_get_increasing_versions(database_url):
    store = RecordStore(database_url)
    first = store.register_model(
        "m", classes=["a"], config="c1", checkpoint="p1", metrics={"bbox_mAP": 0.1}
    )
    second = store.register_model("m", classes=["a"], config="c2", checkpoint="p2", metrics={})
    assert (first.version, second.version) == (1, 2)
    assert store.find_model("m").checkpoint == "p2"
    assert store.find_model("m", 1).checkpoint == "p1"
    assert store.find_model("other") is None
    assert [(m.name, m.version) for m in store.list_models()] == [("m", 1), ("m", 2)]


def test_records_live_in_the_database_of_the_dagster_instance(tmp_path, postgres_url):
    sqlite_home = tmp_path / "sqlite"
    sqlite_home.mkdir()
    write_instance_config(sqlite_home)
    with DagsterInstance.from_config(str(sqlite_home)) as instance:
        assert records_url(instance) == f"sqlite:///{sqlite_home / 'records.db'}"

    pg_home = tmp_path / "pg"
    pg_home.mkdir()
    write_instance_config(pg_home, postgres_url)
    with DagsterInstance.from_config(str(pg_home)) as instance:
        assert records_url(instance) == postgres_url
        record_store(instance).create_run("detection", "detection", 0, {})
    tables = set(sa.inspect(sa.create_engine(postgres_url)).get_table_names())
    # Dagster's tables and ours side by side, each with its own migration history
    assert {"runs", "event_logs", "alembic_version"} <= tables
    assert {"dp_run_records", "dp_models", "dp_alembic_version"} <= tables


def test_an_upgrade_from_the_previous_schema_keeps_every_record(database_url):
    engine = sa.create_engine(database_url)
    migrate(engine, "0001")
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO dp_run_records (kind, status, queue, priority, created_at, attempts,"
                " dagster_run_ids, params) VALUES ('detection', 'success', 'detection', 10,"
                " '2026-01-02 03:04:05', 1, '[\"r1\"]', '{\"images\": [\"a.png\"]}')"
            )
        )
    migrate(engine)
    [record] = RecordStore(database_url).list_runs()
    assert (record.kind, record.status, record.dagster_run_ids) == ("detection", "success", ["r1"])
    assert record.params == {"images": ["a.png"]}
    indexes = {index["name"] for index in sa.inspect(engine).get_indexes("dp_run_records")}
    assert {"ix_dp_run_records_run_at", "ix_dp_run_records_queue"} <= indexes


def test_the_tables_are_what_the_migrations_make(database_url):
    RecordStore(database_url)  # migrates an empty database to the newest revision
    with sa.create_engine(database_url).connect() as connection:
        differences = compare_metadata(
            MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}),
            Base.metadata,
        )
    assert differences == []


def _first_use(database_url: str, at: float) -> int:
    time.sleep(max(0.0, at - time.time()))
    return len(RecordStore(database_url).list_runs())


def test_processes_using_a_new_database_at_once_migrate_it_once(database_url):
    # The CLI, the daemon's sensors and a run worker may all be first. Each process starts
    # (imports) first, then all use the database at the same moment.
    context = multiprocessing.get_context("spawn")
    at = time.time() + 8
    with concurrent.futures.ProcessPoolExecutor(6, mp_context=context) as pool:
        assert list(pool.map(_first_use, [database_url] * 6, [at] * 6)) == [0] * 6
