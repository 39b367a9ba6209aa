"""A job as `GET /api/v1/jobs/{id}` answers it: the api's answers, and (without its
output) the body of the task's completion callbacks, which the collector sends."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import Field, PlainSerializer, computed_field, field_validator, model_validator

from kriten_common.answers import Out, Timestamp
from kriten_common.jobtime import format_unix_date

UnixDate = Annotated[datetime, PlainSerializer(format_unix_date, return_type=str)]
"""A job's time in an answer: Go's `time.UnixDate`, as Kriten gives it."""

# A job's times with both of Kriten's names for each, by field name.
TIME_FIELDS = ("start_time", "completion_time", "start_time_v04", "completion_time_v04")


class JobSummaryPublic(Out):
    """A job in a list: without its output. Times are in Go's `time.UnixDate` format, as
    Kriten gives them, under both of Kriten's names for them: `start_time` and
    `completion_time` (Kriten 0.5) and `startTime` and `completionTime` (Kriten 0.4, which
    clients such as kriten-netbox still read); each pair has the same value."""

    id: str
    owner: str
    start_time: UnixDate | None = Field(default=None, description="Only once started")
    completion_time: UnixDate | None = Field(default=None, description="Only once finished")
    # Read from the same column as their Kriten 0.5 twins (`validation_alias`).
    start_time_v04: UnixDate | None = Field(
        default=None,
        alias="startTime",
        validation_alias="start_time",
        description="`start_time`, under Kriten 0.4's name",
    )
    completion_time_v04: UnixDate | None = Field(
        default=None,
        alias="completionTime",
        validation_alias="completion_time",
        description="`completion_time`, under Kriten 0.4's name",
    )
    task: str
    status: str
    source: str
    webhook_id: str | None
    delivery_id: str | None
    exit_code: int | None
    error: str | None
    concurrency_key: str | None = Field(
        default=None, description="Its task's concurrency key's value on the input"
    )
    created_at: Timestamp

    @computed_field  # type: ignore[prop-decorator]
    @property
    def failed(self) -> int:
        return 1 if self.status == "failed" else 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def completed(self) -> int:
        return 1 if self.status == "succeeded" else 0

    @model_validator(mode="after")
    def _times_absent_until_set(self) -> Self:
        # Absent, not null, until set: Kriten's clients test for the key, and `dump`
        # leaves out the fields that are not set.
        for name in TIME_FIELDS:
            if getattr(self, name) is None:
                self.model_fields_set.discard(name)
        return self


class JobPublic(JobSummaryPublic):
    """A job, with its input and its output."""

    input: str = Field(description="The input as given to the task (`EXTRA_VARS`)")
    stdout: str
    json_data: Any

    @field_validator("stdout", mode="before")
    @classmethod
    def _no_output_yet(cls, value: str | None) -> str:
        return value or ""
