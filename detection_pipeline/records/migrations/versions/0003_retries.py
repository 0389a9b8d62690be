"""What the upkeep sensor needs: failed runs awaiting its decision, and why one was not retried.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "dp_run_records",
        sa.Column("retry_pending", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("dp_run_records", sa.Column("not_retried", sa.Text(), nullable=True))
    op.create_index("ix_dp_run_records_retry_pending", "dp_run_records", ["retry_pending"])


def downgrade() -> None:
    op.drop_index("ix_dp_run_records_retry_pending", "dp_run_records")
    op.drop_column("dp_run_records", "not_retried")
    op.drop_column("dp_run_records", "retry_pending")
