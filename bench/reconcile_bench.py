"""Reconciliation tick cost with 100 and with 100,000 run records in the database.

    .venv/bin/python bench/reconcile_bench.py [--postgres URL] [--ticks 20]

Each database holds 5 processing records whose Dagster runs are running, so every tick has the
same work to do; the rest are finished records, as a database that has served for years holds.
Prints the median tick time of `RunService.reconcile_active()` (what the reconcile_runs sensor
does each tick) for both sizes and their ratio, measured in one run of this script. With a
PostgreSQL URL (of a server whose user may create databases) both databases are made there
and dropped afterwards; otherwise SQLite, the embedded default. Writes
bench/results/reconcile_<time>.json.
"""

import argparse
import contextlib
import datetime as dt
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test
from figures import report  # bench/figures.py

from detection_pipeline.instance import use_home, write_instance_config
from detection_pipeline.records.schema import RunRecord, Status
from detection_pipeline.records.service import RunService
from detection_pipeline.settings import Settings

ACTIVE = 5
BATCH = 10_000


@contextlib.contextmanager
def postgres_database(admin_url: str):
    name = f"dp_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def fill(service: RunService, finished: int) -> None:
    """`finished` successful records, then ACTIVE processing ones with running Dagster runs."""
    now = dt.datetime.now(dt.UTC)
    record = {
        "kind": "detection",
        "status": Status.SUCCESS.value,
        "queue": "detection",
        "priority": 10,
        "created_at": now,
        "finished_at": now,
        "attempts": 1,
        "params": {"images": ["/data/photos"], "model": "dumps"},
        "model": "dumps",
    }
    with service.store._session() as session:  # a bulk insert: the store makes one at a time
        for start in range(0, finished, BATCH):
            rows = [
                {**record, "dagster_run_ids": [str(uuid.uuid4())]}
                for _ in range(min(BATCH, finished - start))
            ]
            session.execute(sa.insert(RunRecord), rows)
    for _ in range(ACTIVE):
        run = create_run_for_test(
            service.instance, job_name="detect", status=DagsterRunStatus.STARTED
        )
        created, _ = service.store.create_run("detection", "detection", 10, {}, "dumps")
        service.store.add_attempt(created.id, run.run_id)
        service.store.mark_processing(created.id, run.run_id)


def median_tick(finished: int, ticks: int, postgres: str | None) -> float:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_database(postgres)) if postgres else None
        home = use_home(Path(stack.enter_context(tempfile.TemporaryDirectory())))
        write_instance_config(home, url)
        instance = stack.enter_context(DagsterInstance.get())
        service = RunService(instance, Settings.load(home))
        fill(service, finished)
        service.reconcile_active()  # warm: connections, caches
        times = []
        for _ in range(ticks):
            started = time.perf_counter()
            changed = service.reconcile_active()
            times.append(time.perf_counter() - started)
            assert changed == [], "the processing runs are running: nothing to change"
        return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", help="PostgreSQL admin URL (default: SQLite)")
    parser.add_argument("--ticks", type=int, default=20)
    args = parser.parse_args()
    small, large = 100 - ACTIVE, 100_000 - ACTIVE
    small_tick = median_tick(small, args.ticks, args.postgres)
    large_tick = median_tick(large, args.ticks, args.postgres)
    figures = {
        "storage": "postgres" if args.postgres else "sqlite",
        "ticks (median of)": args.ticks,
        f"tick_ms_{small + ACTIVE}_records": round(small_tick * 1000, 1),
        f"tick_ms_{large + ACTIVE}_records": round(large_tick * 1000, 1),
        "ratio_large_over_small": round(large_tick / small_tick, 2),
    }
    report("reconcile", figures)


if __name__ == "__main__":
    main()
