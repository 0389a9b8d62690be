"""SQLAlchemy engines that a forked process goes on using, through connections of its own.

Run workers are forked from a process that has the instance and the records open
(instance/run_worker_server.py), and inherit its engines: the statements SQLAlchemy compiled
for them (cached per engine) and their pooled connections. SQLite forbids taking a connection
across fork, even to close it, and a PostgreSQL connection's socket must not be shared: a
forked process gives each engine a new pool and keeps the inherited one, unused and unclosed.
"""

import os
import weakref

import sqlalchemy as sa

_engines: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
_inherited_pools: list[sa.pool.Pool] = []


def renewed_in_forks(engine: sa.Engine) -> sa.Engine:
    """`engine`, given a new pool in every process forked from this one."""
    _engines.add(engine)
    return engine


def _renew_pools() -> None:
    for engine in list(_engines):
        _inherited_pools.append(engine.pool)
        engine.dispose(close=False)  # a new pool; the old one left as it is


os.register_at_fork(after_in_child=_renew_pools)
