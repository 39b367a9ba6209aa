"""The request and answer bodies of `/tasks`."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field, ValidationInfo, field_validator

from kriten_api.fields import check_name
from kriten_api.schemas import In, Out, Timestamp
from kriten_api.secret_rotation import check_grace
from kriten_common import errors
from kriten_common.callbacks import EVENTS, MAX_CALLBACKS, check_callbacks, shown_url
from kriten_common.concurrency import POLICIES, check_key_expression, check_policy
from kriten_common.task_schemas import check_schema

# The largest timeout the database's integer column holds.
MAX_TIMEOUT_SECONDS = 2**31 - 1


class CallbackPublic(Out):
    """A completion callback: where the finished job is posted, and for which statuses."""

    url: str
    events: list[str] = Field(description=f"Some of: {', '.join(EVENTS)}")


class TaskPublic(Out):
    name: str
    runner: str
    command: str
    synchronous: bool
    # A row's `schema` is Pydantic's deprecated `BaseModel.schema()`: read `schema_` first.
    schema_: dict[str, Any] | None = Field(
        alias="schema", validation_alias=AliasChoices("schema_", "schema")
    )
    timeout_seconds: int | None
    description: str
    callbacks: list[CallbackPublic] = Field(
        description="Called when a job ends (docs/callbacks.md)"
    )
    callback_secret: str | None = Field(
        default=None,
        description=(
            "The `whsec_` secret signing the callbacks: shown once, by create, by rotate,"
            " and by the update that gives an older task its first callbacks"
        ),
    )
    concurrency_key: str | None = Field(
        default=None, description="JMESPath on the job input; equal values run one at a time"
    )
    concurrency_policy: str = Field(default="queue", description=f"One of {', '.join(POLICIES)}")
    created_at: Timestamp
    updated_at: Timestamp

    @field_validator("concurrency_policy", mode="before")
    @classmethod
    def _default_policy(cls, value: Any) -> Any:
        return "queue" if value is None else value

    @field_validator("callbacks", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


class TaskBase(In):
    """The fields a create and an update share. A null `schema`, `timeout_seconds` or
    `description` clears it; an empty schema is no schema."""

    answer = TaskPublic
    # First: fields are validated in order, and a bad name is the first thing to tell.
    name: str | None = Field(
        default=None, description="A DNS-1123 name on create; an update takes it from the URL"
    )
    runner: str | None = Field(default=None, description="Required on create")
    command: str | None = Field(default=None, description="Required on create")
    synchronous: bool | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    timeout_seconds: int | None = Field(default=None, description="A positive integer")
    description: str | None = None
    callbacks: list[dict[str, Any]] | None = Field(
        default=None,
        description=(
            f'At most {MAX_CALLBACKS} `{{"url": ..., "events": [...]}}`: an absolute http(s)'
            f" URL without credentials, and some of {', '.join(EVENTS)} (all when left"
            " out); null or [] removes them"
        ),
    )

    concurrency_key: str | None = Field(
        default=None,
        description=(
            "A JMESPath expression on the job input (docs/concurrency.md): jobs whose values"
            ' are equal run one at a time; null or "" removes it'
        ),
    )
    concurrency_policy: str | None = Field(
        default=None,
        description=f"For jobs with the same key: {', '.join(POLICIES)} (null: queue)",
    )

    @field_validator("concurrency_key", mode="before")
    @classmethod
    def _usable_key(cls, value: Any) -> Any:
        # Before the type check, so that each mistake is named in the rule's own words.
        return check_key_expression(value)

    @field_validator("concurrency_policy", mode="before")
    @classmethod
    def _known_policy(cls, value: Any) -> Any:
        return check_policy(value)

    @field_validator("callbacks", mode="before")
    @classmethod
    def _usable_callbacks(cls, value: Any) -> Any:
        # Before the type check, so that each mistake is named in the rule's own words.
        return None if value is None else check_callbacks(value)

    @field_validator("runner", "command", mode="before")
    @classmethod
    def _given(cls, value: Any, info: ValidationInfo) -> Any:
        # Before the type check: null and "" are "required", as a missing field is.
        if value is None or value == "":
            raise errors.InvalidInput(f"{info.field_name} is required")
        return value

    @field_validator("synchronous", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Left out, it keeps its value (false on create); null is no boolean.
        if value is None:
            raise errors.InvalidInput("synchronous must be a boolean")
        return value

    @field_validator("schema_")
    @classmethod
    def _usable_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_schema(value)
        return value

    @field_validator("timeout_seconds")
    @classmethod
    def _timeout_in_range(cls, value: int | None) -> int | None:
        if value is not None and not 0 < value <= MAX_TIMEOUT_SECONDS:
            raise errors.InvalidInput(
                f"timeout_seconds must be an integer from 1 to {MAX_TIMEOUT_SECONDS}"
            )
        return value


class TaskCreate(TaskBase):
    name: str = Field(description="A DNS-1123 name")
    runner: str
    command: str

    @field_validator("name", mode="before")
    @classmethod
    def _dns_name(cls, value: Any) -> str:
        return check_name(value)


class TaskUpdate(TaskBase):
    """A merge: only the fields given change."""


class CallbackSecretRotate(In):
    grace_seconds: int | None = Field(
        default=None,
        description="How long the previous secret keeps signing too (default a day; 0: not)",
    )

    @field_validator("grace_seconds")
    @classmethod
    def _grace_range(cls, value: int | None) -> int | None:
        return check_grace(value)


class CallbackDeliveryPublic(Out):
    """One attempt to call a completion callback (the delivery log)."""

    id: str
    job_id: str
    url: str = Field(description="The callback's URL, without its query")
    event: str
    webhook_id: str = Field(description="The same on every attempt for one job and URL")
    attempt: int
    attempted_at: Timestamp
    status_code: int | None = Field(description="null when no answer came")
    latency_ms: int | None
    error: str | None
    delivered: bool
    gave_up: bool = Field(description="The last attempt: no retry follows")

    @field_validator("url", mode="before")
    @classmethod
    def _without_query(cls, value: Any) -> Any:
        # The query may hold the receiver's token; the log only tells which callback.
        return shown_url(value) if isinstance(value, str) else value
