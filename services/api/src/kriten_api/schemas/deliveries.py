"""The request and answer bodies of a webhook's deliveries and test deliveries."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from kriten_api.schemas import In, Out


class TestDeliveryIn(In):
    body: Any = Field(default=None, description="The event to send; a sample when absent")


class DeliveryOut(Out):
    id: str
    webhook_id: str
    received_at: str
    scheme: str | None
    outcome: str
    reason: str | None
    source: str | None
    idempotency_key: str | None
    job_id: str | None
    size: int
    secret_matched: str | None
    headers: dict[str, str]
    body: str | None = Field(default=None, description="Not in lists; only kept when accepted")
