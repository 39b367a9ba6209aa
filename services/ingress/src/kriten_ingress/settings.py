"""The ingress service's settings."""

from __future__ import annotations

from pydantic import Field

from kriten_common.settings import CommonSettings


class IngressSettings(CommonSettings):
    port: int = 8081
    # The default body cap; a webhook's own `max_body_bytes` replaces it for that webhook.
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    replay_window_seconds: float = Field(default=300.0, gt=0)
    # The safety net behind `config.changed` events: a cached webhook configuration is read
    # again after this long even if no event said it changed (an event lost while the
    # broker connection was down, say). While the subscription is down it is capped at
    # one second, so a rotated or deleted secret still stops working within a second.
    config_cache_seconds: float = Field(default=10.0, ge=0)
    # Stale-if-error: while the database cannot be read, a cached configuration is still
    # used for this long after it was read, unless `config.changed` invalidated it. Job
    # requests are durable in RabbitMQ, so a database outage need not stop intake; the
    # bound limits how long a change whose announcement was lost can go unnoticed.
    config_stale_if_error_seconds: float = Field(default=900.0, ge=0)
    # Each replica announces itself this often on the broadcast exchange; the replicas
    # heard from in the last three intervals share each webhook's rate limit (peers.py).
    # At most the longest interval a replica counts a peer's by (peers.py).
    ingress_heartbeat_seconds: float = Field(default=2.0, gt=0, le=600.0)
    # Recent job ids remembered per replica, to answer `"status": "duplicate"`.
    recent_keys: int = Field(default=100_000, ge=0)
    # Delivery-log events being published at once; beyond this they are dropped (and
    # counted), so a slow broker never holds up the run endpoint.
    delivery_log_in_flight: int = Field(default=1000, ge=1)
    # Rejected deliveries logged per webhook and replica: a token bucket, so a flood of
    # bad requests cannot fill the database. Every rejection is still counted in metrics.
    rejected_log_per_second: float = Field(default=1.0, ge=0)
    rejected_log_burst: int = Field(default=20, ge=0)
