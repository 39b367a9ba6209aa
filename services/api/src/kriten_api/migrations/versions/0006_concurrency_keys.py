"""Concurrency keys: a task's key expression and policy, the key value on each job, and
the dispatcher's gate table (`keyed_jobs`: each keyed job's place in its key's line).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("concurrency_key", sa.Text(), nullable=True))
        batch.add_column(sa.Column("concurrency_policy", sa.String(), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("concurrency_key", sa.String(), nullable=True))
    op.create_table(
        "keyed_jobs",
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("launched", sa.Boolean(), nullable=False),
        sa.Column("ended", sa.String(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("job_id", name="keyed_jobs_pkey"),
    )
    op.create_index("ix_keyed_jobs_key_accepted", "keyed_jobs", ["key", "accepted_at"])


def downgrade() -> None:
    op.drop_table("keyed_jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("concurrency_key")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("concurrency_policy")
        batch.drop_column("concurrency_key")
