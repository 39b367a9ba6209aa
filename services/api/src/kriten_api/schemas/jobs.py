"""The request and answer bodies of `/jobs`."""

from __future__ import annotations

from typing import Any

from pydantic import Field, RootModel

from kriten_api.schemas import Out


class JobSummaryOut(Out):
    """A job in a list: without its output. Times are in Go's `time.UnixDate` format, as
    Kriten gives them, under both of Kriten's names for them: `start_time` and
    `completion_time` (Kriten 0.5) and `startTime` and `completionTime` (Kriten 0.4, which
    clients such as kriten-netbox still read); each pair has the same value."""

    id: str
    owner: str
    start_time: str | None = Field(default=None, description="Only once started")
    completion_time: str | None = Field(default=None, description="Only once finished")
    start_time_v04: str | None = Field(
        default=None, alias="startTime", description="`start_time`, under Kriten 0.4's name"
    )
    completion_time_v04: str | None = Field(
        default=None,
        alias="completionTime",
        description="`completion_time`, under Kriten 0.4's name",
    )
    failed: int
    completed: int
    task: str
    status: str
    source: str
    webhook_id: str | None
    delivery_id: str | None
    exit_code: int | None
    error: str | None
    created_at: str


class JobOut(JobSummaryOut):
    """A job, with its output."""

    stdout: str
    json_data: Any


class JobAcceptedOut(Out):
    msg: str
    id: str
    status: str | None = Field(default=None, description="`accepted`, for a redelivery")


class CreateJobOut(RootModel[JobOut | JobAcceptedOut]):
    """The finished job (a synchronous task done in time), else the new job's id."""
