"""The request and answer bodies of `/dead_letters`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from kriten_api.schemas import Out


class DeadLetterOut(Out):
    id: str = Field(description="The message_id, or for a message without one a hash of it")
    message_id: str | None
    routing_key: str | None = Field(description="The event type (AMQP `type`)")
    queue: str | None = Field(description="The work queue that gave up on it")
    reason: str | None
    job_id: str | None
    correlation_id: str | None
    dead_lettered_at: str | None = Field(description="When known (RabbitMQ's own dead letters)")
    size: int = Field(description="The message body's size in bytes")
    replayable: bool = Field(description="Whether it can go back to its work queue")
    headers: dict[str, Any] | None = Field(default=None, description="Not in lists")
    events: list[dict[str, Any]] | None = Field(
        default=None, description="Not in lists; the decoded events, when they decode"
    )
    body: str | None = Field(default=None, description="Not in lists; only when undecodable")
    decode_error: str | None = Field(default=None, description="Not in lists")
