"""Completion callbacks: a task's callbacks and their signing secret, and the callback
delivery log (one row per attempt, written by the collector).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("callbacks", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("callback_secret_encrypted", sa.Text(), nullable=True))
        batch.add_column(sa.Column("previous_callback_secret_encrypted", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column(
                "previous_callback_secret_expires_at", sa.DateTime(timezone=True), nullable=True
            )
        )
    op.create_table(
        "callback_deliveries",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("task", sa.String(), nullable=False),
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event", sa.String(), nullable=False),
        sa.Column("webhook_id", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.Column("gave_up", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="callback_deliveries_pkey"),
    )
    op.create_index(
        "ix_callback_deliveries_task_attempted", "callback_deliveries", ["task", "attempted_at"]
    )
    op.create_index("ix_callback_deliveries_job_url", "callback_deliveries", ["job_id", "url"])
    op.create_index("ix_callback_deliveries_attempted_at", "callback_deliveries", ["attempted_at"])


def downgrade() -> None:
    op.drop_table("callback_deliveries")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("previous_callback_secret_expires_at")
        batch.drop_column("previous_callback_secret_encrypted")
        batch.drop_column("callback_secret_encrypted")
        batch.drop_column("callbacks")
