"""Alembic environment: always called from records.database with an open connection."""

from alembic import context

from detection_pipeline.records.schema import VERSION_TABLE, Base

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite can only alter tables by copying them.
)
with context.begin_transaction():
    context.run_migrations()
