"""The request and answer bodies of a webhook's deliveries and test deliveries."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from kriten_api.schemas import In, Out, Timestamp


class TestDeliveryCreate(In):
    body: Any = Field(default=None, description="The event to send; a sample when absent")


class DeliverySummaryPublic(Out):
    """A delivery in a list: without its body."""

    id: str
    webhook_id: str
    received_at: Timestamp
    scheme: str | None
    outcome: str
    reason: str | None
    source: str | None
    idempotency_key: str | None
    job_id: str | None
    size: int
    secret_matched: str | None
    headers: dict[str, str]


class DeliveryPublic(DeliverySummaryPublic):
    body: str | None = Field(default=None, description="Not in lists; only kept when accepted")

    @field_validator("body")
    @classmethod
    def _accepted_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Only an accepted delivery's body can be run again (redeliver); others are not shown.
        return value if info.data.get("outcome") == "accepted" else None
