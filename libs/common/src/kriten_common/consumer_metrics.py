"""Prometheus counters of what consumers do with the messages they cannot ack at once."""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter

RetryKind = Literal["transient", "attempt"]


class ConsumerMetrics:
    """One per service registry (a counter may be registered only once in it), shared by
    every consumer of the service; the `queue` label tells them apart."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._retries = Counter(
            "kriten_consumer_retries_total",
            "Events sent to a delay queue: kind=transient while a dependency is down (no"
            " attempt used), kind=attempt after a failure that uses one of its attempts.",
            ("queue", "kind"),
            registry=registry,
        )
        self._dead_letters = Counter(
            "kriten_consumer_dead_letters_total",
            "Events or messages given up on and moved to the dead-letter queue.",
            ("queue",),
            registry=registry,
        )

    def retried(self, queue: str, kind: RetryKind) -> None:
        self._retries.labels(queue=queue, kind=kind).inc()

    def dead_lettered(self, queue: str) -> None:
        self._dead_letters.labels(queue=queue).inc()
