"""The request and answer bodies of `/cronjobs`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from kriten_api.schemas import In, Out


class CronJobOut(Out):
    name: str
    owner: str
    task: str
    schedule: str
    disable: bool
    extra_vars: dict[str, Any]
    created_at: str
    updated_at: str


class CronJobIn(In):
    answer = CronJobOut
    name: str | None = Field(default=None, description="A DNS-1123 name; only on create")
    task: str | None = Field(default=None, description="Required on create")
    schedule: str | None = Field(default=None, description="5-field cron, UTC; required on create")
    disable: bool | None = None
    extra_vars: dict[str, Any] | None = None
