"""The request and answer bodies of `/jobs`."""

from __future__ import annotations

from pydantic import Field, RootModel

from kriten_api.schemas import Out

# A job's answer is also its completion callbacks' body: defined once, in kriten_common.
from kriten_common.job_answers import JobPublic as JobPublic
from kriten_common.job_answers import JobSummaryPublic as JobSummaryPublic


class JobAcceptedOut(Out):
    msg: str
    id: str
    status: str | None = Field(default=None, description="`accepted`, for a redelivery")


class CreateJobOut(RootModel[JobPublic | JobAcceptedOut]):
    """The finished job (a synchronous task done in time), else the new job's id."""
