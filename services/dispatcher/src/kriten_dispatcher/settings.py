"""The dispatcher service's settings."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from kriten_common.settings import CommonSettings


class DispatcherSettings(CommonSettings):
    port: int = 8082
    # How many job requests are launched at once.
    prefetch: int = Field(default=32, gt=0)
    # Hours a local job's directory is kept after the collector stored the job's final
    # state; its output and records are in the database by then.
    # (KRITEN_LOCAL_JOB_RETENTION_HOURS is its earlier name, still accepted.)
    job_dir_retention_hours: float = Field(
        default=24.0,
        ge=0,
        validation_alias=AliasChoices(
            "KRITEN_JOB_DIR_RETENTION_HOURS", "KRITEN_LOCAL_JOB_RETENTION_HOURS"
        ),
    )
    # Local executor: how old the last fetch of a runner's branch may be for a job to use
    # its checkout; 0 fetches for every job.
    checkout_refresh_seconds: float = Field(default=2.0, ge=0)
    # Concurrency keys: how long after its acceptance a keyed job may start when nothing
    # is ahead of it, so that a job accepted just before it, whose request another
    # replica is still recording, is seen and goes first (docs/architecture.md).
    concurrency_settle_seconds: float = Field(default=1.0, ge=0)
