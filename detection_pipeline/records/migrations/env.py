"""Alembic environment: always called from records.database with an open connection."""

from alembic import context

from detection_pipeline.records.schema import Base

VERSION_TABLE = "dp_alembic_version"  # Dagster's own migrations use `alembic_version`.

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite can only alter tables by copying them.
)
with context.begin_transaction():
    context.run_migrations()
