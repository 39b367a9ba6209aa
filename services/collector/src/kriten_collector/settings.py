"""The collector service's settings."""

from __future__ import annotations

from pydantic import Field

from kriten_common.settings import CommonSettings


class CollectorSettings(CommonSettings):
    port: int = 8083
    # Largest stdout stored per job; longer output keeps its head and tail.
    output_cap_bytes: int = Field(default=1024 * 1024, gt=0)
    # Retention (kriten_collector.retention; 0 keeps forever). How long the webhook
    # delivery log keeps a delivery before purging it.
    delivery_retention_hours: float = Field(default=168.0, ge=0)
    # Final jobs deleted, and final jobs' output cleared (the job kept), this many days
    # after they finished.
    job_retention_days: float = Field(default=0.0, ge=0)
    job_output_retention_days: float = Field(default=0.0, ge=0)
    # How often the purge runs, and the most rows one of its statements changes.
    retention_interval_seconds: float = Field(default=300.0, gt=0)
    retention_batch_size: int = Field(default=1000, ge=1)
    # Reconciliation (kriten_collector.reconcile): how often non-final jobs are checked
    # against the executor, and how long a running (queued) job must have been unchanged
    # before one with no execution at all is failed.
    reconcile_interval_seconds: float = Field(default=60.0, gt=0)
    reconcile_running_grace_seconds: float = Field(default=120.0, ge=0)
    reconcile_queued_grace_seconds: float = Field(default=3600.0, ge=0)
    # Completion callbacks (kriten_collector.callback_sender): the base of the job's log
    # link in their body (else a path alone), the wait before the first retry (later
    # ones grow to an hour, see kriten_collector.callback_schedule), the most attempts
    # per callback (30: about a day), each call's timeout, and how long the delivery log
    # keeps an attempt (0 keeps forever).
    public_url: str | None = None
    callback_first_retry_seconds: float = Field(default=5.0, gt=0)
    callback_max_attempts: int = Field(default=30, ge=1)
    callback_timeout_seconds: float = Field(default=10.0, gt=0)
    callback_retention_hours: float = Field(default=168.0, ge=0)
