"""The dispatcher service's settings."""

from __future__ import annotations

from pydantic import Field

from kriten_common.settings import CommonSettings


class DispatcherSettings(CommonSettings):
    port: int = 8082
    # How many job requests are launched at once.
    prefetch: int = Field(default=32, gt=0)
