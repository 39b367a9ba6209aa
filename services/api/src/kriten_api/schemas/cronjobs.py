"""The request and answer bodies of `/cronjobs`, and the rules of a schedule: a standard
5-field cron expression (minute, hour, day of month, month, day of week), evaluated in UTC,
parsed with `cronsim` (the same library the scheduler uses)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cronsim import CronSim, CronSimError
from pydantic import Field, field_validator

from kriten_api.fields import check_name
from kriten_api.schemas import In, Out, Timestamp
from kriten_common import errors

CRON_FIELDS = 5


def check_schedule(value: Any, *, now: datetime | None = None) -> str:
    """A 5-field cron expression that fires at least once; `InvalidInput` otherwise."""
    message = (
        "schedule must be a 5-field cron expression (minute hour day-of-month month"
        " day-of-week), e.g. '*/5 * * * *'"
    )
    if not isinstance(value, str):
        raise errors.InvalidInput(message)
    schedule = " ".join(value.split())
    # cronsim also takes a 6-field form with seconds; the contract is 5 fields.
    if len(schedule.split(" ")) != CRON_FIELDS:
        raise errors.InvalidInput(message)
    try:
        next(CronSim(schedule, now or datetime.now(UTC)))
    except CronSimError as problem:
        raise errors.InvalidInput(f"{message}: {str(problem).lower()}") from None
    except StopIteration:
        raise errors.InvalidInput(f"schedule {schedule!r} never fires") from None
    return schedule


class CronJobPublic(Out):
    name: str
    owner: str
    task: str
    schedule: str
    disable: bool
    extra_vars: dict[str, Any]
    created_at: Timestamp
    updated_at: Timestamp


class CronJobBase(In):
    """The fields a create and an update share; null `extra_vars` are none (`{}`)."""

    answer = CronJobPublic
    name: str | None = Field(default=None, description="A DNS-1123 name; only on create")
    task: str | None = Field(default=None, description="Required on create")
    schedule: str | None = Field(default=None, description="5-field cron, UTC; required on create")
    disable: bool | None = None
    extra_vars: dict[str, Any] | None = None

    @field_validator("task", mode="before")
    @classmethod
    def _task_given(cls, value: Any) -> Any:
        # Before the type check: null and "" are "required", as a missing task is.
        if value is None or value == "":
            raise errors.InvalidInput("task is required")
        return value

    @field_validator("schedule", mode="before")
    @classmethod
    def _cron(cls, value: Any) -> str:
        return check_schedule(value)

    @field_validator("disable")
    @classmethod
    def _disable_given(cls, value: bool | None) -> bool:
        if value is None:
            raise errors.InvalidInput("disable must be a boolean")
        return value

    @field_validator("extra_vars", mode="before")
    @classmethod
    def _no_extra_vars(cls, value: Any) -> Any:
        return {} if value is None else value


class CronJobCreate(CronJobBase):
    name: str = Field(description="A DNS-1123 name; only on create")
    task: str = Field(description="Required on create")
    schedule: str = Field(description="5-field cron, UTC; required on create")

    @field_validator("name", mode="before")
    @classmethod
    def _dns_name(cls, value: Any) -> str:
        return check_name(value)


class CronJobUpdate(CronJobBase):
    """A merge: only the fields given change."""

    name: str | None = Field(default=None, description="The cronjob's own name, or left out")
