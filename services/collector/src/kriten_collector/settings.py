"""The collector service's settings."""

from __future__ import annotations

from pydantic import Field

from kriten_common.settings import CommonSettings


class CollectorSettings(CommonSettings):
    port: int = 8083
    # Largest stdout stored per job; longer output keeps its head and tail.
    output_cap_bytes: int = Field(default=1024 * 1024, gt=0)
    # How long the webhook delivery log keeps a delivery before purging it.
    delivery_retention_hours: float = Field(default=168.0, gt=0)
