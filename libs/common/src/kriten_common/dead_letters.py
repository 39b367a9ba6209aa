"""The dead-letter queue, read and replayed in place: the queue itself is the store.

Three kinds of dead letter land in `<prefix>.dead-letter`:
- an event a consumer gave up on (`Consumer`), published alone with `x-kriten-queue`
  (the work queue that failed), `x-kriten-reason` and, when known, `x-kriten-job-id`;
- a message a consumer could not decode, as received, with the same two headers (its
  `message_id` is whatever it had; aiormq gives one to every message it publishes, so
  only another client's message may have none, and gets an id hashed from it);
- a message past its work queue's delivery limit, dead-lettered by RabbitMQ itself: no
  `x-kriten-*` headers, but `x-death` names the queue and the reason.

Browsing takes messages with `basic.get` without acknowledging them, then closes the
channel, which hands every one of them back to the queue: nothing is removed by looking.
On RabbitMQ 3.10 the dead-letter queue has no delivery limit, so these returns cost
nothing; on 4.x quorum queues have a default limit, but messages returned by a channel
close are "released" and not counted against it (a `nack(requeue=True)` would be, which
is why nothing here nacks). While a browse holds messages, they are not "ready": another
browse (a second list, a replay, another api replica) does not see them, and `count`
leaves them out. Lists are a snapshot, and a replay racing a list may answer "not found";
trying again finds it.

Replay is at-least-once: the event is republished to its work queue with the broker's
confirm before the dead letter is acknowledged, so a crash in between leaves both. It is
exactly-once in effect for jobs, because the job id travels in the event: a dispatcher
that meets the same `JobRequested` twice finds the job already there.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import decimal
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from kriten_common import errors, messages
from kriten_common.amqp import PUBLISH_TIMEOUT_SECONDS, WORK_QUEUES, Topology
from kriten_common.logging import get_logger

log = get_logger(__name__)

# How far a browse (or a replay's search) reaches into the queue: it holds every message
# it took until it is done, so it must stop somewhere. A queue this deep has a cause to
# fix before its dead letters are worth reading one by one.
MAX_BROWSE = 10_000
# Headers the broker changes each time a message is handed out again: not part of what
# identifies a dead letter.
VOLATILE_HEADERS = frozenset({"x-delivery-count"})


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter, as found in the queue (see the module's docstring)."""

    id: str
    message_id: str | None
    routing_key: str | None
    queue: str | None
    reason: str | None
    job_id: str | None
    correlation_id: str | None
    dead_lettered_at: dt.datetime | None
    size: int
    headers: dict[str, Any]
    events: list[dict[str, Any]] | None
    body: str | None
    decode_error: str | None
    # Only a dead letter whose work queue is known, and is one of this topology's, can go
    # back to it: a header names the queue, and a header is not trusted with any other.
    replayable: bool


def json_safe(value: Any) -> Any:
    """AMQP header values (bytes, datetimes, decimals, nested tables) as JSON values."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def stable_id(body: bytes, headers: dict[str, Any]) -> str:
    """An id for a dead letter without a `message_id` (a raw one): the same message gets
    the same id on every browse, since neither its body nor these headers change."""
    kept = {k: v for k, v in headers.items() if k not in VOLATILE_HEADERS}
    digest = hashlib.sha256(body)
    digest.update(json.dumps(json_safe(kept), sort_keys=True).encode())
    return f"sha256-{digest.hexdigest()[:32]}"


def _first_death(headers: dict[str, Any]) -> dict[str, Any]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0]
    return {}


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None


def _job_id(headers: dict[str, Any], events: list[messages.Event] | None) -> str | None:
    if job_id := _text(headers.get("x-kriten-job-id")):
        return job_id
    for event in events or ():
        value = getattr(event, "job_id", None)
        if isinstance(value, str) and value:
            return value
    return None


def work_queues(topology: Topology) -> frozenset[str]:
    return frozenset(topology.queue(consumer) for consumer in WORK_QUEUES)


def dead_letter(message: AbstractIncomingMessage, topology: Topology) -> DeadLetter:
    """The record of one message of the dead-letter queue."""
    headers: dict[str, Any] = dict(message.headers or {})
    death = _first_death(headers)
    events: list[messages.Event] | None
    try:
        events = messages.decode(message.type or "", message.body)
        problem = None
    except ValueError as error:
        events, problem = None, str(error)
    reason = _text(headers.get("x-kriten-reason"))
    if reason is None and (why := _text(death.get("reason"))):
        reason = f"dead-lettered by RabbitMQ: {why}"
    # RabbitMQ's own time of death first: a message's timestamp, when a publisher set
    # one, may be when it was first sent rather than when it failed.
    died = death.get("time")
    when = died if isinstance(died, dt.datetime) else message.timestamp
    queue = _text(headers.get("x-kriten-queue")) or _text(death.get("queue"))
    return DeadLetter(
        id=message.message_id or stable_id(message.body, headers),
        message_id=message.message_id,
        routing_key=message.type,
        queue=queue,
        reason=reason,
        job_id=_job_id(headers, events),
        correlation_id=message.correlation_id,
        dead_lettered_at=when,
        size=len(message.body),
        headers=json_safe(headers),
        events=None if events is None else [e.model_dump(mode="json") for e in events],
        body=message.body.decode("utf-8", "replace") if events is None else None,
        decode_error=problem,
        replayable=queue in work_queues(topology),
    )


async def _take(
    channel: AbstractChannel, topology: Topology, limit: int
) -> list[AbstractIncomingMessage]:
    """Up to `limit` messages, taken and not acknowledged (the channel's close returns them)."""
    queue = await channel.get_queue(topology.dead_letter_queue)
    taken: list[AbstractIncomingMessage] = []
    while len(taken) < min(limit, MAX_BROWSE):
        message = await queue.get(no_ack=False, fail=False, timeout=PUBLISH_TIMEOUT_SECONDS)
        if message is None:
            break
        taken.append(message)
    return taken


async def browse(
    connection: AbstractRobustConnection, topology: Topology, *, limit: int
) -> list[DeadLetter]:
    """The oldest `limit` dead letters (at most `MAX_BROWSE`), all left in the queue."""
    try:
        async with await connection.channel() as channel:
            return [dead_letter(m, topology) for m in await _take(channel, topology, limit)]
    except asyncio.CancelledError:
        raise
    except Exception as problem:
        log.warning("dead_letters_browse_failed", error=str(problem))
        raise errors.Unavailable("message broker unavailable") from None


async def count(connection: AbstractRobustConnection, topology: Topology) -> int:
    """The messages ready in the dead-letter queue (those a browse holds right now are not)."""
    try:
        async with await connection.channel() as channel:
            queue = await channel.declare_queue(topology.dead_letter_queue, passive=True)
            return int(queue.declaration_result.message_count or 0)
    except asyncio.CancelledError:
        raise
    except Exception as problem:
        log.warning("dead_letters_count_failed", error=str(problem))
        raise errors.Unavailable("message broker unavailable") from None


async def find(
    connection: AbstractRobustConnection, topology: Topology, dead_letter_id: str
) -> DeadLetter | None:
    """Dead letter `dead_letter_id`, left in the queue; None when it is not there."""
    try:
        async with await connection.channel() as channel:
            found = await _search(channel, topology, dead_letter_id)
            return None if found is None else found[1]
    except asyncio.CancelledError:
        raise
    except Exception as problem:
        log.warning("dead_letter_find_failed", id=dead_letter_id, error=str(problem))
        raise errors.Unavailable("message broker unavailable") from None


async def replay(
    connection: AbstractRobustConnection, topology: Topology, dead_letter_id: str
) -> DeadLetter | None:
    """Sends dead letter `dead_letter_id` back to its work queue, then removes it; None
    when no such dead letter is in the queue, `errors.Conflict` when it cannot go back."""
    try:
        # on_return_raises: a work queue that no longer exists must fail the replay, not
        # swallow the message while its dead letter is acknowledged.
        async with await connection.channel(
            publisher_confirms=True, on_return_raises=True
        ) as channel:
            return await _replay(channel, topology, dead_letter_id)
    except (asyncio.CancelledError, errors.Conflict):
        raise
    except aio_pika.exceptions.PublishError:
        # Returned as unroutable (a broker nack is another DeliveryError, a 503 below):
        # the work queue was deleted since the topology was declared.
        raise errors.Conflict(
            f"dead letter {dead_letter_id!r}: its work queue no longer exists"
        ) from None
    except Exception as problem:
        log.warning("dead_letter_replay_failed", id=dead_letter_id, error=str(problem))
        raise errors.Unavailable("message broker unavailable") from None


async def _search(
    channel: AbstractChannel, topology: Topology, dead_letter_id: str
) -> tuple[AbstractIncomingMessage, DeadLetter] | None:
    """The message with that id, taken and not acknowledged; None when the queue (up to
    `MAX_BROWSE`) has none. One at a time, so the search holds no more than it must;
    every message taken goes back when the channel closes, unless acknowledged."""
    queue = await channel.get_queue(topology.dead_letter_queue)
    for _ in range(MAX_BROWSE):
        message = await queue.get(no_ack=False, fail=False, timeout=PUBLISH_TIMEOUT_SECONDS)
        if message is None:
            return None
        record = dead_letter(message, topology)
        if record.id == dead_letter_id:
            return message, record
    return None


async def _replay(
    channel: AbstractChannel, topology: Topology, dead_letter_id: str
) -> DeadLetter | None:
    found = await _search(channel, topology, dead_letter_id)
    if found is None:
        return None
    message, record = found
    if record.queue is None or not record.replayable:
        raise errors.Conflict(
            f"dead letter {dead_letter_id!r} names no work queue of this system to go back to"
        )
    # The body and identity unchanged; the headers reset, so no `x-kriten-attempt`
    # carries over and the consumer gives it a full set of attempts again.
    await channel.default_exchange.publish(
        aio_pika.Message(
            body=message.body,
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            type=message.type,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
        ),
        routing_key=record.queue,
        mandatory=True,
        timeout=PUBLISH_TIMEOUT_SECONDS,
    )
    # Only after the confirm: a failure before it leaves the dead letter in place.
    await message.ack()
    log.info("dead_letter_replayed", id=record.id, queue=record.queue, job_id=record.job_id)
    return record
