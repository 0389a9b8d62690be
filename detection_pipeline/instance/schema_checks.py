"""Dagster's run storage asks the database on every run query and every run event whether
migrations gave its runs table certain columns: on PostgreSQL a query of the catalog (6 ms and
a server process's CPU), five per submitted run and several a second in an idle daemon.

The answer cannot change under a running process: `detection-pipeline init` migrates the
database before the services start, and Dagster asks for a restart after any migration (its
own PostgreSQL run storage keeps `has_built_index` the same way). So it is asked once per
storage and process."""

import functools

from dagster._core.storage.runs.sql_run_storage import SqlRunStorage

# The checks on the run storage's paths every run takes (queries, events, new runs).
RUN_COLUMN_CHECKS = ("has_run_stats_index_cols", "has_backfill_id_column")


def remember_run_columns(run_storage: SqlRunStorage) -> None:
    for check in RUN_COLUMN_CHECKS:
        setattr(run_storage, check, functools.cache(getattr(run_storage, check)))
