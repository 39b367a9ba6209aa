"""The ingress's `/metrics` after one delivery: its own series, what its publisher sent
(the job request and its delivery-log record), and every documented ingress metric."""

from __future__ import annotations

import asyncio

import pytest

from tests.ingress.test_run_endpoint import RUN, SECRET, World, world
from tests.ingress.test_sender_bodies import netbox_device_update, netbox_wire
from tests.test_metrics import documented

pytestmark = pytest.mark.integration
__all__ = ["world"]  # the fixture


async def test_one_delivery_shows_on_metrics(world: World) -> None:
    hook = await world.webhook(scheme="netbox")
    client = await world.ingress()
    raw, headers = netbox_wire(netbox_device_update(), SECRET)
    assert (await client.post(RUN + hook, data=raw, headers=headers)).status == 202
    wanted = (
        'kriten_publisher_events_total{outcome="confirmed",routing_key="job.requested"} 1.0',
        'kriten_publisher_events_total{outcome="confirmed",routing_key="webhook.delivery"} 1.0',
        'kriten_publisher_messages_total{outcome="confirmed",routing_key="job.requested"} 1.0',
        "kriten_ingress_publish_confirm_seconds_count 1.0",
    )
    for _ in range(100):
        text = await (await client.get("/metrics")).text()
        if all(line in text.splitlines() for line in wanted):
            break
        await asyncio.sleep(0.05)
    lines = text.splitlines()
    for line in wanted:
        assert line in lines
    for name, (metric, services) in documented().items():
        if services == "all" or "ingress" in services:
            assert f"# TYPE {name} {metric.type}" in text, f"the ingress's /metrics lacks {name}"
