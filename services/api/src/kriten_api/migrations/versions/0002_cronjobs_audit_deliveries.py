"""Cronjobs, the audit log, the webhook delivery log, and per-webhook limits.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cronjobs",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("owner_id", sa.String(), nullable=False),
        sa.Column("task", sa.String(), nullable=False),
        sa.Column("schedule", sa.String(), nullable=False),
        sa.Column("disable", sa.Boolean(), nullable=False),
        sa.Column("extra_vars", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="cronjobs_pkey"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="cronjobs_owner_id_fkey"),
        sa.ForeignKeyConstraint(["task"], ["tasks.name"], name="cronjobs_task_fkey"),
    )
    op.create_index("ix_cronjobs_owner_id", "cronjobs", ["owner_id"])
    op.create_index("ix_cronjobs_task", "cronjobs", ["task"])

    op.create_table(
        "audit_logs",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.String(), nullable=True),
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("event_type", sa.String(), nullable=False),
        sa.Column("category", sa.String(), nullable=False),
        sa.Column("target", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="audit_logs_pkey"),
    )
    op.create_index("ix_audit_logs_created_at", "audit_logs", ["created_at"])

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("webhook_id", sa.String(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scheme", sa.String(), nullable=True),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("source", sa.String(), nullable=True),
        sa.Column("idempotency_key", sa.String(), nullable=True),
        sa.Column("job_id", sa.String(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("secret_matched", sa.String(), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="webhook_deliveries_pkey"),
    )
    op.create_index(
        "ix_webhook_deliveries_webhook_received",
        "webhook_deliveries",
        ["webhook_id", "received_at"],
    )

    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("max_body_bytes", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rate_limit_per_second", sa.Double(), nullable=True))
        batch.add_column(sa.Column("allowed_sources", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("allowed_sources")
        batch.drop_column("rate_limit_per_second")
        batch.drop_column("max_body_bytes")
    op.drop_index("ix_webhook_deliveries_webhook_received", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_audit_logs_created_at", table_name="audit_logs")
    op.drop_table("audit_logs")
    op.drop_index("ix_cronjobs_task", table_name="cronjobs")
    op.drop_index("ix_cronjobs_owner_id", table_name="cronjobs")
    op.drop_table("cronjobs")
