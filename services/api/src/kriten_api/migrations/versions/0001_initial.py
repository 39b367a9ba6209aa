"""Initial schema: every table of `kriten_common.db.models`.

Written out by hand rather than generated, so it stays fixed when the models move
on; tests/api/test_migrations.py fails if the two ever disagree. Constraint names
are PostgreSQL's defaults, which `metadata.create_all` would produce there too, so
that later migrations (batch mode on SQLite included) can refer to them by name.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("password_hash", sa.String(), nullable=True),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="users_pkey"),
        sa.UniqueConstraint("provider", "username", name="users_provider_username_key"),
    )
    op.create_index("ix_users_username", "users", ["username"])

    op.create_table(
        "groups",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="groups_pkey"),
        sa.UniqueConstraint("provider", "name", name="groups_provider_name_key"),
    )
    op.create_index("ix_groups_name", "groups", ["name"])

    op.create_table(
        "group_members",
        sa.Column("group_id", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("group_id", "user_id", name="group_members_pkey"),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name="group_members_group_id_fkey",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="group_members_user_id_fkey",
            ondelete="CASCADE",
        ),
    )

    op.create_table(
        "roles",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("resource", sa.String(), nullable=False),
        sa.Column("resource_ids", sa.JSON(), nullable=False),
        sa.Column("access", sa.String(), nullable=False),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="roles_pkey"),
        sa.UniqueConstraint("name", name="roles_name_key"),
    )

    op.create_table(
        "role_bindings",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("role_id", sa.String(), nullable=False),
        sa.Column("subject_kind", sa.String(), nullable=False),
        sa.Column("subject_provider", sa.String(), nullable=False),
        sa.Column("subject_name", sa.String(), nullable=False),
        sa.Column("subject_id", sa.String(), nullable=False),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="role_bindings_pkey"),
        sa.UniqueConstraint("name", name="role_bindings_name_key"),
        sa.ForeignKeyConstraint(["role_id"], ["roles.id"], name="role_bindings_role_id_fkey"),
    )
    op.create_index("ix_role_bindings_role_id", "role_bindings", ["role_id"])
    op.create_index("ix_role_bindings_subject_id", "role_bindings", ["subject_id"])

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("owner_id", sa.String(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("key_hash", sa.String(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="api_tokens_pkey"),
        sa.UniqueConstraint("key_hash", name="api_tokens_key_hash_key"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="api_tokens_owner_id_fkey"),
    )
    op.create_index("ix_api_tokens_owner_id", "api_tokens", ["owner_id"])

    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name="revoked_tokens_pkey"),
    )

    op.create_table(
        "runners",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("image", sa.String(), nullable=False),
        sa.Column("git_url", sa.String(), nullable=False),
        sa.Column("branch", sa.String(), nullable=False),
        sa.Column("token_encrypted", sa.Text(), nullable=True),
        sa.Column("secrets_encrypted", sa.Text(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("name", name="runners_pkey"),
    )

    op.create_table(
        "tasks",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("runner", sa.String(), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("synchronous", sa.Boolean(), nullable=False),
        sa.Column("schema", sa.JSON(), nullable=True),
        sa.Column("timeout_seconds", sa.Integer(), nullable=True),
        sa.Column("description", sa.String(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("name", name="tasks_pkey"),
        sa.ForeignKeyConstraint(["runner"], ["runners.name"], name="tasks_runner_fkey"),
    )
    op.create_index("ix_tasks_runner", "tasks", ["runner"])

    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("owner_id", sa.String(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("task", sa.String(), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("previous_secret_encrypted", sa.Text(), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scheme", sa.String(), nullable=False),
        sa.Column("filter", sa.String(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="webhooks_pkey"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="webhooks_owner_id_fkey"),
        sa.ForeignKeyConstraint(["task"], ["tasks.name"], name="webhooks_task_fkey"),
    )
    op.create_index("ix_webhooks_owner_id", "webhooks", ["owner_id"])
    op.create_index("ix_webhooks_task", "webhooks", ["task"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("task", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("owner_id", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("webhook_id", sa.String(), nullable=True),
        sa.Column("delivery_id", sa.String(), nullable=True),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completion_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("stdout", sa.Text(), nullable=True),
        sa.Column("json_data", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="jobs_pkey"),
    )
    op.create_index("ix_jobs_task", "jobs", ["task"])
    op.create_index("ix_jobs_owner", "jobs", ["owner"])
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    op.create_index("ix_jobs_task_created", "jobs", ["task", "created_at"])


def downgrade() -> None:
    # Children before parents; dropping a table drops its indexes with it.
    for table in (
        "jobs",
        "webhooks",
        "tasks",
        "runners",
        "revoked_tokens",
        "api_tokens",
        "role_bindings",
        "roles",
        "group_members",
        "groups",
        "users",
    ):
        op.drop_table(table)
