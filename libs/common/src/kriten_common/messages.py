"""The events that flow through RabbitMQ: one Pydantic class per event, past tense.

On the wire one AMQP message carries a JSON array of events of one class (usually one;
a publisher may coalesce). The AMQP `type` property names the class's routing key.
Consumers ignore unknown fields so changes stay additive.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from kriten_common.clock import utcnow
from kriten_common.ids import random_hex


class Event(BaseModel):
    """The shared envelope."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    routing_key: ClassVar[str]

    message_id: str = Field(default_factory=random_hex)
    correlation_id: str | None = None
    occurred_at: datetime = Field(default_factory=utcnow)
    schema_version: int = 1


JobSource = Literal["api", "webhook", "cron"]
FinalStatus = Literal["succeeded", "failed", "cancelled", "skipped"]
# How a job that never launched ended: dead-lettered (failed), replaced by a newer job
# with its concurrency key (cancelled), or refused a busy key (skipped).
UnlaunchedStatus = Literal["failed", "cancelled", "skipped"]
ConcurrencyPolicy = Literal["queue", "replace", "skip"]


class JobRequested(Event):
    """A job was admitted: its id is final, its input exactly what the caller sent."""

    routing_key: ClassVar[str] = "job.requested"

    job_id: str
    task: str
    owner: str
    owner_id: str
    source: JobSource
    input: str
    webhook_id: str | None = None
    delivery_id: str | None = None
    # The value of the task's concurrency key on this input (None: no key) and the
    # task's policy, both fixed at admission. `occurred_at` is the acceptance time that
    # orders the jobs of one key (ties broken by job id; docs/architecture.md).
    concurrency_key: str | None = None
    concurrency_policy: ConcurrencyPolicy = "queue"


class JobCancelRequested(Event):
    """A user asked to stop a job (api → dispatcher)."""

    routing_key: ClassVar[str] = "job.cancel_requested"

    job_id: str
    requested_by: str


class JobDispatched(Event):
    routing_key: ClassVar[str] = "job.dispatched"

    job_id: str
    executor: str


class JobDispatchFailed(Event):
    """The job will never be launched (the error says why): it failed, or its concurrency
    key ended it (`status`)."""

    routing_key: ClassVar[str] = "job.dispatch_failed"

    job_id: str
    error: str
    status: UnlaunchedStatus = "failed"


class JobFinished(Event):
    routing_key: ClassVar[str] = "job.finished"

    job_id: str
    task: str
    status: FinalStatus
    exit_code: int | None = None


class WebhookDelivered(Event):
    """One delivery to a known webhook, whatever its outcome (the delivery log)."""

    routing_key: ClassVar[str] = "webhook.delivery"

    delivery_id: str
    webhook_id: str
    received_at: datetime
    scheme: str | None
    outcome: Literal["accepted", "duplicate", "filtered", "rejected"]
    reason: str | None = None
    source: str | None = None
    idempotency_key: str | None = None
    job_id: str | None = None
    size: int
    secret_matched: Literal["current", "previous"] | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None


class ConfigChanged(Event):
    """A resource that services cache changed (cache invalidation; fanout)."""

    routing_key: ClassVar[str] = "config.changed"

    kind: Literal["webhook", "task", "runner", "user", "rbac"]
    name: str


class IngressHeartbeat(Event):
    """An ingress replica is alive (or, with `leaving`, stopping): every replica counts
    the others it hears from to share each webhook's rate limit (broadcast, not kept)."""

    routing_key: ClassVar[str] = "ingress.heartbeat"

    instance_id: str = Field(min_length=1, max_length=64)
    # The sender's heartbeat interval: a peer not heard from for three of them is gone.
    interval_seconds: float = Field(gt=0)
    leaving: bool = False


EVENT_CLASSES: dict[str, type[Event]] = {
    cls.routing_key: cls
    for cls in (
        JobRequested,
        JobCancelRequested,
        JobDispatched,
        JobDispatchFailed,
        JobFinished,
        WebhookDelivered,
        ConfigChanged,
        IngressHeartbeat,
    )
}


@functools.cache
def _list_of(cls: type[Event]) -> TypeAdapter[list[Any]]:
    # Built once per class: building an adapter costs more than using it.
    return TypeAdapter(list[cls])  # type: ignore[valid-type]


def encode(events: Sequence[Event]) -> bytes:
    """One message body for events of one class."""
    cls = type(events[0]) if events else None
    if cls is None or any(type(event) is not cls for event in events):
        raise ValueError("a message carries events of exactly one class")
    return _list_of(cls).dump_json(list(events))


def decode(routing_key: str, body: bytes) -> list[Event]:
    """The events of one message; raises `ValueError` for an unknown kind or bad body."""
    cls = EVENT_CLASSES.get(routing_key)
    if cls is None:
        raise ValueError(f"unknown event type {routing_key!r}")
    return list(_list_of(cls).validate_json(body))
