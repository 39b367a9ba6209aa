"""The request and answer bodies of `/webhooks`."""

from __future__ import annotations

from pydantic import Field

from kriten_api.schemas import In, Out


class WebhookOut(Out):
    id: str
    owner: str
    secret: str = Field(description="Shown once, by create and rotate; masked otherwise")
    description: str
    task: str
    scheme: str
    filter: str | None
    enabled: bool
    url: str
    max_body_bytes: int | None
    rate_limit_per_second: float | None
    allowed_sources: list[str] | None
    previous_secret_expires_at: str | None
    created_at: str
    updated_at: str
    warnings: list[str] | None = Field(default=None, description="Only on create and rotate")


class WebhookIn(In):
    answer = WebhookOut
    task: str | None = Field(default=None, description="Required on create")
    secret: str | None = Field(default=None, description="Generated when not given")
    description: str | None = None
    scheme: str | None = Field(default=None, description="auto, infrahub, standard, netbox, github")
    filter: str | None = Field(default=None, description="A JMESPath expression")
    enabled: bool | None = None
    max_body_bytes: int | None = None
    rate_limit_per_second: float | None = None
    allowed_sources: list[str] | None = None


class RotateIn(In):
    secret: str | None = Field(default=None, description="Generated when not given")
    grace_seconds: int | None = Field(
        default=None, description="How long the previous secret keeps verifying"
    )
