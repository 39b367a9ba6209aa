"""Prometheus metrics of the broker's consumers and publishers, shared by every service.

One `ConsumerMetrics` and one `PublisherMetrics` per registry (`of`): a metric may be
registered only once in a registry, and in the development mode the ingress's run
endpoint is mounted into the api app and shares its registry. The label values are
bounded: a consumer's queue name (without the prefix; a broadcast queue without its
random suffix), a routing key of `kriten_common.messages`, and fixed outcomes.

Cheap on the hot path: the label children of a queue or routing key are bound once
(`queue()`, `PublisherMetrics.sent`), so a message costs an increment and a histogram
observation, never a registry lookup. A queue's depth is not read per message but by
its consumer every `QUEUE_DEPTH_INTERVAL_SECONDS` (one passive declare; see
`kriten_common.amqp.Consumer`).
"""

from __future__ import annotations

import weakref
from typing import Any, ClassVar, Literal, Self

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RetryKind = Literal["transient", "attempt"]
MessageOutcome = Literal["ack", "retry", "dead_letter", "requeue", "reject"]
MESSAGE_OUTCOMES: tuple[MessageOutcome, ...] = ("ack", "retry", "dead_letter", "requeue", "reject")
PublishOutcome = Literal["confirmed", "failed"]

QUEUE_DEPTH_INTERVAL_SECONDS = 15.0
# From a cached lookup (a millisecond) to a local job's git clone (seconds).
HANDLER_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class _OnePerRegistry:
    """Metrics registered once per registry: `of(registry)` gives every user of the
    registry the same instance."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._by_registry = weakref.WeakKeyDictionary()

    def __init__(self, registry: CollectorRegistry) -> None:
        del registry

    @classmethod
    def of(cls, registry: CollectorRegistry) -> Self:
        """The registry's instance, registered on first use."""
        found: Self | None = cls._by_registry.get(registry)
        if found is None:
            found = cls._by_registry[registry] = cls(registry)
        return found


class QueueMetrics:
    """The label children of one queue, bound once."""

    __slots__ = (
        "dead_lettered",
        "handler_seconds",
        "outcomes",
        "redelivered",
        "retried_attempt",
        "retried_transient",
    )

    def __init__(self, metrics: ConsumerMetrics, queue: str) -> None:
        self.outcomes = {o: metrics.messages.labels(queue, o) for o in MESSAGE_OUTCOMES}
        self.redelivered = metrics.redelivered.labels(queue)
        self.handler_seconds = metrics.handler_seconds.labels(queue)
        self.retried_transient = metrics.retries.labels(queue, "transient")
        self.retried_attempt = metrics.retries.labels(queue, "attempt")
        self.dead_lettered = metrics.dead_letters.labels(queue)

    def consumed(self, outcome: MessageOutcome, seconds: float) -> None:
        self.outcomes[outcome].inc()
        self.handler_seconds.observe(seconds)


class ConsumerMetrics(_OnePerRegistry):
    """Shared by every consumer of a service; the `queue` label tells them apart."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._queues: dict[str, QueueMetrics] = {}
        self.messages = Counter(
            "kriten_consumer_messages_total",
            "Messages taken from a queue, by what became of the message: ack (every event"
            " handled), retry (acked; an event went to a delay queue), dead_letter (acked;"
            " an event, or the undecodable message, went to the dead-letter queue), requeue"
            " (given back to the broker: a retry or dead-letter publish failed), reject"
            " (a broadcast message dropped: undecodable or its handler failed)",
            ("queue", "outcome"),
            registry=registry,
        )
        self.redelivered = Counter(
            "kriten_consumer_redelivered_total",
            "Messages the broker delivered again (the consumer before did not ack them)",
            ("queue",),
            registry=registry,
        )
        self.handler_seconds = Histogram(
            "kriten_consumer_handler_seconds",
            "Time from a message's delivery to its ack, retry or dead-letter",
            ("queue",),
            registry=registry,
            buckets=HANDLER_BUCKETS,
        )
        self.retries = Counter(
            "kriten_consumer_retries_total",
            "Events sent to a delay queue: kind=transient while a dependency is down (no"
            " attempt used), kind=attempt after a failure that uses one of its attempts.",
            ("queue", "kind"),
            registry=registry,
        )
        self.dead_letters = Counter(
            "kriten_consumer_dead_letters_total",
            "Events or messages given up on and moved to the dead-letter queue.",
            ("queue",),
            registry=registry,
        )
        self.queue_messages = Gauge(
            "kriten_consumer_queue_messages",
            "Messages ready in the consumer's work queue (its lag), read every"
            f" {QUEUE_DEPTH_INTERVAL_SECONDS:g} s; every replica reports the same queue",
            ("queue",),
            registry=registry,
        )
        self.queue_consumers = Gauge(
            "kriten_consumer_queue_consumers",
            "Consumers the broker counts on the work queue (all replicas), read with the depth",
            ("queue",),
            registry=registry,
        )

    def queue(self, queue: str) -> QueueMetrics:
        """The bound children of `queue` (bound on first use)."""
        found = self._queues.get(queue)
        if found is None:
            found = self._queues[queue] = QueueMetrics(self, queue)
        return found

    def depth_gauges(self, queue: str) -> tuple[Gauge, Gauge]:
        """The ready-messages and consumers gauges of a work queue (a broadcast queue has
        none: it is the instance's own and never holds a backlog)."""
        return self.queue_messages.labels(queue), self.queue_consumers.labels(queue)

    def retried(self, queue: str, kind: RetryKind) -> None:
        bound = self.queue(queue)
        (bound.retried_transient if kind == "transient" else bound.retried_attempt).inc()

    def dead_lettered(self, queue: str) -> None:
        self.queue(queue).dead_lettered.inc()


class PublisherMetrics(_OnePerRegistry):
    """What publishers sent to the exchange, by routing key and outcome."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._children: dict[tuple[str, PublishOutcome], tuple[Counter, Counter]] = {}
        self.messages = Counter(
            "kriten_publisher_messages_total",
            "Messages published, by routing key and outcome: confirmed by the broker, or"
            " failed (broker unavailable, timeout, or unroutable)",
            ("routing_key", "outcome"),
            registry=registry,
        )
        self.events = Counter(
            "kriten_publisher_events_total",
            "Events published (a message carries one or more: group commit), by routing key"
            " and outcome",
            ("routing_key", "outcome"),
            registry=registry,
        )

    def sent(self, routing_key: str, outcome: PublishOutcome, events: int) -> None:
        key = (routing_key, outcome)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.messages.labels(routing_key, outcome),
                self.events.labels(routing_key, outcome),
            )
        children[0].inc()
        children[1].inc(events)
