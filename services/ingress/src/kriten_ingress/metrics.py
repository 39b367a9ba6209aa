"""The ingress's Prometheus metrics.

Deliveries are labelled per webhook only for known webhooks (a finite set); requests
for unknown ids are counted under `webhook=""` so a scan of random ids cannot blow up the
number of series. The label is `webhook_label(id)`, never the id itself: the id is the
only thing a sender needs besides the secret to reach the run endpoint, and `/metrics`
answers anyone who can reach it. The cache hit ratio is
`rate(kriten_ingress_config_cache_total{result="hit"}[5m]) /
rate(kriten_ingress_config_cache_total[5m])`.
"""

from __future__ import annotations

import hashlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

WEBHOOK_LABEL_LENGTH = 12


def webhook_label(webhook_id: str) -> str:
    """The first 12 hex digits of the id's SHA-256, or "" for no webhook.

    Webhook ids are random UUIDs (122 random bits), so the hash cannot be reversed by
    guessing, yet whoever knows an id can compute its label
    (`printf %s "$ID" | sha256sum | cut -c1-12`). 48 bits keep labels distinct for any
    realistic number of webhooks.
    """
    if not webhook_id:
        return ""
    return hashlib.sha256(webhook_id.encode()).hexdigest()[:WEBHOOK_LABEL_LENGTH]


class IngressMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "kriten_ingress_deliveries",
            "Webhook deliveries by webhook (a hash of its id), scheme and outcome",
            ["webhook", "scheme", "outcome"],
            registry=registry,
        )
        self.rejections = Counter(
            "kriten_ingress_rejections",
            "Rejected webhook deliveries by reason",
            ["reason"],
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
            "Time from publishing a job request to the broker's confirm",
            registry=registry,
        )
        self.config_cache = Counter(
            "kriten_ingress_config_cache",
            "Webhook configuration lookups by result: hit, miss (read from the database),"
            " stale (answered from a configuration past its TTL because the database"
            " could not be read), unavailable (no usable configuration: answered 503)",
            ["result"],
            registry=registry,
        )
        self.config_read_failures = Counter(
            "kriten_ingress_config_read_failures",
            "Reads of a webhook's configuration from the database that failed or timed out",
            registry=registry,
        )
        self.delivery_log = Counter(
            "kriten_ingress_delivery_log",
            "Delivery-log events by fate: published, failed, dropped (too many in flight),"
            " sampled_out (rejected deliveries over the per-webhook log rate)",
            ["result"],
            registry=registry,
        )
        self.duplicates = Counter(
            "kriten_ingress_duplicates",
            "Deliveries this replica recognised as a retry of one it accepted",
            registry=registry,
        )
        self.peers = Gauge(
            "kriten_ingress_peers",
            "Live ingress replicas this one counts, itself included: each webhook's rate"
            " limit is divided by it",
            registry=registry,
        )
