"""Indexes for the delayed-run query (run_at) and for listing by queue.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_dp_run_records_run_at", "dp_run_records", ["run_at"])
    op.create_index("ix_dp_run_records_queue", "dp_run_records", ["queue"])


def downgrade() -> None:
    op.drop_index("ix_dp_run_records_queue", "dp_run_records")
    op.drop_index("ix_dp_run_records_run_at", "dp_run_records")
