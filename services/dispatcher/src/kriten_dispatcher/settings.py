"""The dispatcher service's settings."""

from __future__ import annotations

from pydantic import Field

from kriten_common.settings import CommonSettings


class DispatcherSettings(CommonSettings):
    port: int = 8082
    # How many job requests are launched at once.
    prefetch: int = Field(default=32, gt=0)
    # Hours a local job's directory is kept after the collector stored the job's final
    # state; its output and records are in the database by then.
    local_job_retention_hours: float = Field(default=24.0, ge=0)
