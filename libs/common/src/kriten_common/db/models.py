"""The SQLModel tables, one metadata. Only a table's owning service writes it.

api owns users, groups, roles, bindings, tokens, runners, tasks, webhooks;
the collector owns jobs and the delivery logs (webhook deliveries, callback deliveries);
the dispatcher owns keyed jobs (its concurrency-key gate).
Secrets are stored encrypted (`*_encrypted` columns hold Fernet tokens from
`kriten_common.crypto`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Double, Index, Text, UniqueConstraint
from sqlalchemy.types import DateTime, TypeDecorator
from sqlmodel import Field, SQLModel

from kriten_common.clock import utcnow
from kriten_common.ids import random_uuid


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on both PostgreSQL and SQLite (which drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def created_column() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("provider", "username"),)

    id: str = Field(default_factory=random_uuid, primary_key=True)
    username: str = Field(index=True)
    provider: str = "local"
    password_hash: str | None = None
    builtin: bool = False
    # Carried by every login token; a token whose epoch is not this one is refused.
    # Raised to end all of a user's sessions at once (password change, logout?all=true).
    session_epoch: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    created_at: datetime = created_column()
    updated_at: datetime = created_column()


class Group(SQLModel, table=True):
    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("provider", "name"),)

    id: str = Field(default_factory=random_uuid, primary_key=True)
    name: str = Field(index=True)
    provider: str = "local"
    builtin: bool = False
    created_at: datetime = created_column()
    updated_at: datetime = created_column()


class GroupMember(SQLModel, table=True):
    __tablename__ = "group_members"

    group_id: str = Field(foreign_key="groups.id", primary_key=True, ondelete="CASCADE")
    user_id: str = Field(foreign_key="users.id", primary_key=True, ondelete="CASCADE")


class Role(SQLModel, table=True):
    __tablename__ = "roles"

    id: str = Field(default_factory=random_uuid, primary_key=True)
    name: str = Field(unique=True)
    resource: str
    resource_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    access: str
    builtin: bool = False
    created_at: datetime = created_column()
    updated_at: datetime = created_column()


class RoleBinding(SQLModel, table=True):
    __tablename__ = "role_bindings"

    id: str = Field(default_factory=random_uuid, primary_key=True)
    name: str = Field(unique=True)
    role_id: str = Field(foreign_key="roles.id", index=True)
    subject_kind: str  # "groups" or "users"
    subject_provider: str
    subject_name: str
    subject_id: str = Field(index=True)
    builtin: bool = False
    created_at: datetime = created_column()
    updated_at: datetime = created_column()


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_tokens"

    id: str = Field(default_factory=random_uuid, primary_key=True)
    owner_id: str = Field(foreign_key="users.id", index=True)
    description: str = ""
    enabled: bool = True
    expires: datetime | None = Field(default=None, sa_type=UTCDateTime)
    key_hash: str = Field(unique=True)
    created_at: datetime = created_column()
    updated_at: datetime = created_column()


class RevokedToken(SQLModel, table=True):
    """JWT ids refused until they expire (logout)."""

    __tablename__ = "revoked_tokens"

    jti: str = Field(primary_key=True)
    expires_at: datetime = Field(sa_type=UTCDateTime)


class Runner(SQLModel, table=True):
    __tablename__ = "runners"

    name: str = Field(primary_key=True)
    image: str = ""
    git_url: str
    branch: str = "main"
    token_encrypted: str | None = Field(default=None, sa_type=Text)
    secrets_encrypted: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = created_column()
    updated_at: datetime = created_column()


class Task(SQLModel, table=True):
    __tablename__ = "tasks"

    name: str = Field(primary_key=True)
    runner: str = Field(foreign_key="runners.name", index=True)
    command: str = Field(sa_type=Text)
    synchronous: bool = False
    schema_: dict[str, Any] | None = Field(default=None, sa_column=Column("schema", JSON))
    timeout_seconds: int | None = None
    description: str = ""
    # Completion callbacks: `[{"url": ..., "events": [...]}]` (kriten_common.callbacks),
    # signed with the task's own secret (a `whsec_` key, encrypted; the previous one
    # signs too until it expires, after a rotation).
    callbacks: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    callback_secret_encrypted: str | None = Field(default=None, sa_type=Text)
    previous_callback_secret_encrypted: str | None = Field(default=None, sa_type=Text)
    previous_callback_secret_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Concurrency key (kriten_common.concurrency): a JMESPath expression on the input;
    # jobs with equal values run one at a time, as the policy says (null: `queue`).
    concurrency_key: str | None = Field(default=None, sa_type=Text)
    concurrency_policy: str | None = None
    created_at: datetime = created_column()
    updated_at: datetime = created_column()


class Webhook(SQLModel, table=True):
    __tablename__ = "webhooks"

    id: str = Field(default_factory=random_uuid, primary_key=True)
    owner_id: str = Field(foreign_key="users.id", index=True)
    description: str = ""
    task: str = Field(foreign_key="tasks.name", index=True)
    secret_encrypted: str = Field(sa_type=Text)
    previous_secret_encrypted: str | None = Field(default=None, sa_type=Text)
    previous_secret_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    scheme: str = "auto"
    filter: str | None = None
    enabled: bool = True
    # Per-webhook limits (null: the ingress's defaults).
    max_body_bytes: int | None = None
    rate_limit_per_second: float | None = Field(default=None, sa_type=Double)
    allowed_sources: list[str] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = created_column()
    updated_at: datetime = created_column()


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_task_created", "task", "created_at"),)

    id: str = Field(primary_key=True)
    task: str = Field(index=True)
    owner: str = Field(index=True)
    owner_id: str
    status: str = Field(default="queued", index=True)
    source: str = "api"
    webhook_id: str | None = None
    delivery_id: str | None = None
    input: str = Field(default="", sa_type=Text)
    start_time: datetime | None = Field(default=None, sa_type=UTCDateTime)
    completion_time: datetime | None = Field(default=None, sa_type=UTCDateTime)
    exit_code: int | None = None
    stdout: str | None = Field(default=None, sa_type=Text)
    json_data: Any | None = Field(default=None, sa_column=Column(JSON))
    error: str | None = Field(default=None, sa_type=Text)
    # The value of its task's concurrency key on the input, fixed at admission.
    concurrency_key: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    updated_at: datetime = created_column()


# `skipped`: a job refused at once because its concurrency key was busy (policy `skip`).
FINAL_JOB_STATUSES = frozenset({"succeeded", "failed", "cancelled", "skipped"})


class KeyedJob(SQLModel, table=True):
    """A keyed job's place in its key's line (the dispatcher writes: its gate,
    `kriten_dispatcher.key_gate`). A row is made when a dispatcher first sees the job's
    request; `launched` once the gate let it run; `ended` (a final status, with
    `error`) when the gate ended it unlaunched. A row counts as long as its job is
    not final in `jobs`; rows of final (or long-lost) jobs are removed by the gate and by
    the collector's retention (`kriten_collector.retention.delete_spent_places`)."""

    __tablename__ = "keyed_jobs"
    __table_args__ = (Index("ix_keyed_jobs_key_accepted", "key", "accepted_at"),)

    job_id: str = Field(primary_key=True)
    key: str
    # Admission time (JobRequested.occurred_at): the order of the line, ties by job id.
    accepted_at: datetime = Field(sa_type=UTCDateTime)
    launched: bool = False
    ended: str | None = None
    error: str | None = Field(default=None, sa_type=Text)


def failed_before_launch(job: Job) -> bool:
    """Whether `job` was recorded failed without any execution ever starting: its request
    was dead-lettered (an executor sets a start time as soon as it takes a job). Replaying
    that dead letter may still launch it, and its execution's reports then count."""
    return job.status == "failed" and job.start_time is None and job.exit_code is None


class CronJob(SQLModel, table=True):
    """A schedule that runs a task as its owner (api writes; the scheduler reads)."""

    __tablename__ = "cronjobs"

    name: str = Field(primary_key=True)
    owner: str
    owner_id: str = Field(foreign_key="users.id", index=True)
    task: str = Field(foreign_key="tasks.name", index=True)
    schedule: str
    disable: bool = False
    extra_vars: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = created_column()
    updated_at: datetime = created_column()


class AuditLog(SQLModel, table=True):
    """Who did what: every login and every create, update and delete (api writes)."""

    __tablename__ = "audit_logs"

    id: str = Field(default_factory=random_uuid, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    user_id: str | None = None
    username: str
    provider: str
    event_type: str  # login, create, update, delete
    category: str  # the resource: users, tasks, webhooks, ...
    target: str | None = None
    status: str  # success, failure
    detail: str | None = Field(default=None, sa_type=Text)


class WebhookDelivery(SQLModel, table=True):
    """The delivery log: one row per delivery to a known webhook (the collector writes)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_webhook_received", "webhook_id", "received_at"),)

    id: str = Field(primary_key=True)
    webhook_id: str
    # Indexed alone too: the retention purge deletes by age (migration 0004).
    received_at: datetime = Field(sa_type=UTCDateTime, index=True)
    scheme: str | None = None
    outcome: str
    reason: str | None = None
    source: str | None = None
    idempotency_key: str | None = None
    job_id: str | None = None
    size: int = 0
    secret_matched: str | None = None
    headers: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    body: str | None = Field(default=None, sa_type=Text)


class CallbackDelivery(SQLModel, table=True):
    """The callback delivery log: one row per attempt to call a task's completion
    callback for a finished job (the collector writes). `delivered` marks the attempt
    the receiver took (2xx); `gave_up` the last one, after which no retry follows."""

    __tablename__ = "callback_deliveries"
    __table_args__ = (
        Index("ix_callback_deliveries_task_attempted", "task", "attempted_at"),
        Index("ix_callback_deliveries_job_url", "job_id", "url"),
    )

    id: str = Field(default_factory=random_uuid, primary_key=True)
    task: str
    job_id: str
    url: str = Field(sa_type=Text)
    event: str
    webhook_id: str
    attempt: int
    # Indexed alone too: the retention purge deletes by age.
    attempted_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    status_code: int | None = None
    latency_ms: int | None = None
    error: str | None = Field(default=None, sa_type=Text)
    delivered: bool = False
    gave_up: bool = False
