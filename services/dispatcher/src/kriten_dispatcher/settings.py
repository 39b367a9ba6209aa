"""The dispatcher service's settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kriten_common.settings import CommonSettings


class LocalExecutorSettings(BaseSettings):
    """The local executor's own settings, loadable without the rest (the launcher reads
    them itself, as the Kubernetes launcher reads `KubernetesSettings`)."""

    model_config = SettingsConfigDict(env_prefix="KRITEN_", extra="ignore")

    # Hours a job directory is kept after the collector stored the job's final state;
    # its output and records are in the database by then.
    local_job_retention_hours: float = Field(default=24.0, ge=0)


class DispatcherSettings(CommonSettings, LocalExecutorSettings):
    port: int = 8082
    # How many job requests are launched at once.
    prefetch: int = Field(default=32, gt=0)
