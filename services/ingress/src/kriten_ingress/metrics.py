"""The ingress's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class IngressMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "kriten_ingress_deliveries",
            "Webhook deliveries by outcome and scheme",
            ["outcome", "scheme"],
            registry=registry,
        )
        self.verification_seconds = Histogram(
            "kriten_ingress_verification_seconds",
            "Time spent verifying a signature",
            registry=registry,
            buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01),
        )
        self.publish_seconds = Histogram(
            "kriten_ingress_publish_confirm_seconds",
            "Time from publish to the broker's confirm",
            registry=registry,
        )
