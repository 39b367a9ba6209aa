"""The ingress service's settings."""

from __future__ import annotations

from pydantic import Field

from kriten_common.settings import CommonSettings


class IngressSettings(CommonSettings):
    port: int = 8081
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    replay_window_seconds: float = Field(default=300.0, gt=0)
    # How long a webhook's configuration is reused before it is read again; a rotated or
    # deleted secret stops working within this time.
    config_cache_seconds: float = Field(default=1.0, ge=0)
