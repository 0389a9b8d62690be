"""Dagster's storages ask the database what its schema looks like on every call that depends
on a migration: whether the runs table has its start/end time and backfill columns (every run
query, new run and run event), whether the instigators and secondary index tables exist and
an index migration ran (every sensor or schedule state read or written). On PostgreSQL each is
a catalog query (about 6 ms, and a server process's CPU): a fifth of an idle daemon's work,
five queries per submitted run.

The answers cannot change under a running process: `detection-pipeline init` migrates the
database before the services start, and Dagster asks for a restart after any migration (its
own PostgreSQL run storage keeps `has_built_index` the same way). So each is asked once per
storage and process."""

import functools
from collections.abc import Callable

import sqlalchemy as sa

RUN_STORAGE_CHECKS = ("has_run_stats_index_cols", "has_backfill_id_column", "has_built_index")
SCHEDULE_STORAGE_CHECKS = (
    "has_instigators_table",
    "_has_instigators_table",
    "has_secondary_index_table",
    "has_built_index",
)


def remember_schema(storage, checks: tuple[str, ...]) -> None:
    """Makes `storage`'s schema `checks` (method names) ask the database once each."""
    for check in checks:
        setattr(storage, check, _asked_once(getattr(storage, check)))


def _asked_once(check: Callable) -> Callable:
    answers = {}

    @functools.wraps(check)
    def remembered(*args):
        # By what is asked (an index migration's name), not the connection it is asked on.
        question = tuple(arg for arg in args if not isinstance(arg, sa.Connection))
        if question not in answers:
            answers[question] = check(*args)
        return answers[question]

    return remembered
