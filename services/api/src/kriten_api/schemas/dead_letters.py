"""The answer bodies of `/dead_letters`: `kriten_common.dead_letters.DeadLetter` records,
read from the dead-letter queue (there is no row)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from kriten_api.schemas import Out, Timestamp


class DeadLetterSummaryPublic(Out):
    """A dead letter in a list: without its headers, events and body."""

    id: str = Field(description="The message_id, or for a message without one a hash of it")
    message_id: str | None
    routing_key: str | None = Field(description="The event type (AMQP `type`)")
    queue: str | None = Field(description="The work queue that gave up on it")
    reason: str | None
    job_id: str | None
    correlation_id: str | None
    dead_lettered_at: Timestamp | None = Field(
        description="When known (RabbitMQ's own dead letters)"
    )
    size: int = Field(description="The message body's size in bytes")
    replayable: bool = Field(description="Whether it can go back to its work queue")


class DeadLetterPublic(DeadLetterSummaryPublic):
    """A dead letter, with its headers and, when they decode, its events."""

    headers: dict[str, Any]
    events: list[dict[str, Any]] | None = Field(description="The decoded events, when they decode")
    body: str | None = Field(description="Only when undecodable")
    decode_error: str | None
