"""The run endpoint's pure parts: limits, filters, redaction, the recent-jobs memory,
secret expiry, and the delivery log's bounds (with a stand-in publisher)."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import CollectorRegistry

from kriten_common.amqp import Settled
from kriten_common.client_address import parse_networks
from kriten_common.clock import utcnow
from kriten_common.messages import Event, IngressHeartbeat, WebhookDelivered
from kriten_ingress.dedupe import RecentJobs
from kriten_ingress.delivery_log import DeliveryLog, recorded_headers, redact_signature
from kriten_ingress.filters import compile_filter, filter_rejection, is_truthy
from kriten_ingress.limits import (
    Buckets,
    TokenBucket,
    replica_rate,
    retry_after_seconds,
    source_allowed,
)
from kriten_ingress.metrics import IngressMetrics
from kriten_ingress.peers import LIFETIME_INTERVALS, MAX_PEER_INTERVAL_FACTOR, MAX_PEERS, Peers
from kriten_ingress.settings import IngressSettings
from kriten_ingress.webhook_config import WebhookConfig


def test_token_bucket_allows_burst_then_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.seconds_until_token(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5)
    assert not bucket.take(0.5)
    # Never more than the burst, however long it rested.
    assert sum(bucket.take(1000.0) for _ in range(10)) == 3


def test_buckets_are_per_key_and_rescaled_on_a_new_rate() -> None:
    buckets = Buckets(max_keys=2)
    first = buckets.bucket("a", rate=1.0, burst=1.0, now=0.0)
    assert first.take(0.0)
    assert not buckets.bucket("a", rate=1.0, burst=1.0, now=0.0).take(0.0)
    assert buckets.bucket("b", rate=1.0, burst=1.0, now=0.0).take(0.0)
    # Reconfigured (or the replicas changed): as empty as it was, refilling faster.
    rescaled = buckets.bucket("a", rate=5.0, burst=5.0, now=0.0)
    assert rescaled is first
    assert not rescaled.take(0.0)
    assert rescaled.take(0.2)
    buckets.bucket("c", rate=1.0, burst=1.0, now=0.0)
    assert buckets.bucket("b", rate=1.0, burst=1.0, now=0.0).take(0.0)  # evicted: new


def test_rescaled_bucket_keeps_its_fullness() -> None:
    bucket = TokenBucket(rate=10.0, burst=10.0, now=0.0)
    assert all(bucket.take(0.0) for _ in range(4))  # 6 of 10 left
    bucket.rescale(5.0, 5.0, now=0.0)  # a second replica came: 3 of 5
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    bucket.rescale(10.0, 10.0, now=0.0)  # it left: empty still, refilling at 10 a second
    assert not bucket.take(0.0)
    assert sum(bucket.take(10.0) for _ in range(20)) == 10


async def test_peers_count_heartbeats_and_forget_the_silent() -> None:
    now = [0.0]
    peers = Peers(interval_seconds=2.0, instance_id="me", clock=lambda: now[0])
    assert peers.count() == 1
    await peers.on_event(peers.heartbeat())  # its own: not a peer
    assert peers.count() == 1
    assert not peers.newcomer.is_set()
    await peers.on_event(IngressHeartbeat(instance_id="b", interval_seconds=2.0))
    assert peers.newcomer.is_set()  # answered at once, so b learns of this replica
    await peers.on_event(IngressHeartbeat(instance_id="c", interval_seconds=1.0))
    assert peers.count() == 3
    now[0] = 3.0  # c's three intervals have passed, b's not
    assert peers.refresh() == 2
    await peers.on_event(IngressHeartbeat(instance_id="b", interval_seconds=2.0, leaving=True))
    assert peers.count() == 1


async def test_peers_keep_the_last_count_while_the_broker_is_unreachable() -> None:
    now = [0.0]
    up = [True]
    peers = Peers(interval_seconds=2.0, clock=lambda: now[0])
    peers.subscribed = lambda: up[0]
    await peers.on_event(IngressHeartbeat(instance_id="b", interval_seconds=2.0))
    up[0] = False
    now[0] = 60.0
    assert peers.refresh() == 2  # nothing can be heard: the last count holds
    up[0] = True
    peers.restored()  # b gets three intervals anew to be heard from
    now[0] = 65.0
    assert peers.refresh() == 2
    now[0] = 66.0
    assert peers.refresh() == 1


def test_replica_share_and_retry_after() -> None:
    assert replica_rate(10.0, 4) == (2.5, 2.5)
    assert replica_rate(1.0, 4) == (0.25, 1.0)  # a burst of at least one request
    assert retry_after_seconds(0.01) == 1
    assert retry_after_seconds(2.2) == 3
    assert retry_after_seconds(float("inf")) == 3600


def test_source_allow_list() -> None:
    allowed = parse_networks(["10.0.0.0/8", "2001:db8::/32"])
    assert source_allowed("10.1.2.3", allowed)
    assert source_allowed("2001:db8::1", allowed)
    assert source_allowed("::ffff:10.0.0.1", allowed)  # IPv4-mapped
    assert not source_allowed("192.168.0.1", allowed)
    assert not source_allowed("unknown", allowed)
    assert not source_allowed(None, allowed)
    assert not source_allowed("10.1.2.3", ())


def test_trusted_proxies_setting_parses_and_refuses_junk() -> None:
    settings = IngressSettings(trusted_proxies="127.0.0.1, 10.0.0.0/8")  # type: ignore[arg-type]
    assert [str(n) for n in settings.trusted_proxies] == ["127.0.0.1/32", "10.0.0.0/8"]
    with pytest.raises(ValueError, match="not an IP network"):
        IngressSettings(trusted_proxies="10.0.0.0/8,nonsense")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "truthy"),
    [
        (None, False),
        (False, False),
        ("", False),
        ([], False),
        ({}, False),
        (0, True),
        (0.0, True),
        ("x", True),
        ([0], True),
        (True, True),
    ],
)
def test_jmespath_truth(value: object, truthy: bool) -> None:
    assert is_truthy(value) is truthy


def test_filter_on_a_netbox_body() -> None:
    body = json.dumps(
        {"event": "updated", "object_type": "dcim.device", "data": {"status": {"value": "active"}}}
    ).encode()
    assert filter_rejection(None, body) is None
    assert filter_rejection(compile_filter("object_type == 'dcim.device'"), body) is None
    assert filter_rejection(compile_filter("data.status.value == 'active'"), body) is None
    assert filter_rejection(compile_filter("event == 'created'"), body) == "filter did not match"
    assert filter_rejection(compile_filter("data.missing"), body) == "filter did not match"


def test_filter_failures_filter_out() -> None:
    assert filter_rejection(compile_filter("event"), b"not json") == (
        "body is not JSON (the webhook has a filter)"
    )
    broken = compile_filter("event ==")
    assert broken is not None
    assert broken.compiled is None
    assert filter_rejection(broken, b"{}") == "invalid filter expression"
    reason = filter_rejection(compile_filter("length(count)"), b'{"count": 5}')
    assert reason is not None
    assert reason.startswith("filter failed:")
    assert compile_filter("") is None


def test_signatures_are_redacted() -> None:
    standard = "v1,ARw42xaAApl/nxRo+iPGYwSaMQaOwMo2eyH5JBRA+bQ= v1,AAAA"
    assert redact_signature(standard) == "v1,ARw4… v1,AAAA…"
    assert redact_signature("sha256=757107ea0eb2509fc211") == "sha256=7571…"
    netbox = "3d852f999b5324f1dc6fe2b8ee57d4c1669f1d5de4da05d48c5d7d58f61f7613"
    assert redact_signature(netbox) == "3d85…"
    headers = recorded_headers(
        {
            "webhook-signature": standard,
            "webhook-id": "msg_1",
            "Authorization": "Bearer secret",
            "cookie": "token=x",
        }
    )
    assert headers == {"webhook-signature": "v1,ARw4… v1,AAAA…", "webhook-id": "msg_1"}
    assert "ARw42xaAApl" not in json.dumps(headers)


def test_recent_jobs_forget_the_oldest() -> None:
    recent = RecentJobs(2)
    recent.add("a")
    recent.add("b")
    assert "a" in recent  # now the most recent
    recent.add("c")
    assert "a" in recent
    assert "c" in recent
    assert "b" not in recent
    none = RecentJobs(0)
    none.add("a")
    assert "a" not in none


def test_previous_secret_verifies_only_until_it_expires() -> None:
    config = WebhookConfig(
        webhook_id="w",
        scheme="auto",
        task=None,
        owner=None,
        secret="new-secret",
        previous_secret="old-secret",
        previous_expires_at=1000.0,
    )
    assert config.secrets(999.0) == (("new-secret", "current"), ("old-secret", "previous"))
    assert config.secrets(1000.0) == (("new-secret", "current"),)


class SlowPublisher:
    """Stands in for the broker: holds every publish until released."""

    def __init__(self) -> None:
        self.published: list[Event] = []
        self.release = asyncio.Event()
        self._held: set[asyncio.Task[None]] = set()

    def enqueue(self, event: Event, *, settled: Settled | None = None) -> None:
        self._held.add(asyncio.create_task(self._publish(event, settled)))

    async def _publish(self, event: Event, settled: Settled | None) -> None:
        await self.release.wait()
        self.published.append(event)
        if settled is not None:
            settled(None)


def delivered(outcome: str, webhook_id: str = "w") -> WebhookDelivered:
    return WebhookDelivered(
        delivery_id=str(len(outcome)),
        webhook_id=webhook_id,
        received_at=utcnow(),
        scheme="netbox",
        outcome=outcome,  # type: ignore[arg-type]
        size=1,
    )


def counted(metrics: IngressMetrics, result: str) -> float:
    return metrics.delivery_log.labels(result)._value.get()


async def test_delivery_log_does_not_wait_and_bounds_what_is_in_flight() -> None:
    publisher = SlowPublisher()
    metrics = IngressMetrics(CollectorRegistry())
    log = DeliveryLog(
        publisher,  # type: ignore[arg-type]
        metrics,
        max_in_flight=3,
        rejected_per_second=0.0,
        rejected_burst=100,
    )
    for _ in range(5):
        log.record(delivered("accepted"))  # returns at once though nothing is confirmed
    assert log.in_flight == 3
    assert counted(metrics, "dropped") == 2
    publisher.release.set()
    await log.close(grace_seconds=5)
    assert len(publisher.published) == 3
    assert counted(metrics, "published") == 3


async def test_rejected_deliveries_are_sampled_per_webhook() -> None:
    publisher = SlowPublisher()
    publisher.release.set()
    metrics = IngressMetrics(CollectorRegistry())
    now = [0.0]
    log = DeliveryLog(
        publisher,  # type: ignore[arg-type]
        metrics,
        max_in_flight=1000,
        rejected_per_second=1.0,
        rejected_burst=5,
        clock=lambda: now[0],
    )
    for _ in range(100):
        log.record(delivered("rejected", "w1"))
    for _ in range(3):
        log.record(delivered("rejected", "w2"))
    for _ in range(10):
        log.record(delivered("accepted", "w1"))  # never sampled
    now[0] = 2.0
    log.record(delivered("rejected", "w1"))  # refilled: two more allowed
    log.record(delivered("rejected", "w1"))
    log.record(delivered("rejected", "w1"))
    await log.close(grace_seconds=5)
    outcomes = [(e.webhook_id, e.outcome) for e in publisher.published]  # type: ignore[attr-defined]
    assert outcomes.count(("w1", "rejected")) == 7
    assert outcomes.count(("w2", "rejected")) == 3
    assert outcomes.count(("w1", "accepted")) == 10
    assert counted(metrics, "sampled_out") == 96


async def test_peers_bound_what_heartbeats_make_them_hold() -> None:
    now = [0.0]
    peers = Peers(interval_seconds=2.0, instance_id="me", clock=lambda: now[0])
    # An infinite interval would keep a vanished peer, and divide every rate limit, for ever.
    forever = IngressHeartbeat.model_validate_json(
        '{"instance_id": "b", "interval_seconds": 1e999}'
    )
    await peers.on_event(forever)
    assert peers.count() == 2
    # Counted as at most a few of this replica's own intervals.
    now[0] = LIFETIME_INTERVALS * MAX_PEER_INTERVAL_FACTOR * 2.0 - 0.1
    assert peers.refresh() == 2
    now[0] += 0.1
    assert peers.refresh() == 1
    for number in range(MAX_PEERS + 10):
        await peers.on_event(IngressHeartbeat(instance_id=f"p{number}", interval_seconds=2.0))
    assert peers.count() == 1 + MAX_PEERS
    with pytest.raises(ValueError, match="at most 64 characters"):
        IngressHeartbeat(instance_id="x" * 65, interval_seconds=2.0)
