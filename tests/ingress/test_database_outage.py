"""The run endpoint during a PostgreSQL outage, for real: the ingress reaches the database
through a small TCP proxy that the test cuts (listener closed, open connections reset)
and restores on the same port.

Stale-if-error: webhooks keep being accepted from their last known configuration; a
webhook invalidated by `config.changed` during the outage answers 503 with Retry-After
(its new configuration cannot be read) while the others keep 202; once the database is
back it works with its new configuration.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aiohttp import ClientResponse
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from kriten_common.amqp import publish_broadcast
from kriten_common.db.models import Webhook
from kriten_common.messages import ConfigChanged
from kriten_ingress.app import create_app
from kriten_ingress.settings import IngressSettings
from tests.ingress.test_run_endpoint import (
    RUN,
    SECRET,
    Client,
    World,
    _metric,
    requests,
    world,
)
from tests.ingress.test_sender_bodies import netbox_device_update, netbox_wire
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration
__all__ = ["world"]  # the fixture, imported to be found by pytest

ROTATED = "rotated-secret-value"


@pytest.fixture
async def proxy(postgres_url: str) -> AsyncIterator[TcpProxy]:
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    yield proxy
    await proxy.close()


async def _ingress(world: World, proxy: TcpProxy, **overrides: Any) -> Client:
    url = make_url(world.database_url).set(host="127.0.0.1", port=proxy.port)
    settings = IngressSettings(
        database_url=SecretStr(url.render_as_string(hide_password=False)),
        amqp_url=SecretStr(world.amqp_url),
        amqp_prefix=world.topology.prefix,
        **overrides,
    )
    return await world.make_client(create_app(settings))


async def _deliver(client: Client, hook: str, secret: str = SECRET) -> ClientResponse:
    raw, headers = netbox_wire(netbox_device_update(name=str(uuid.uuid4())), secret)
    response = await client.post(RUN + hook, data=raw, headers=headers)
    await response.read()
    return response


async def _until(client: Client, hook: str, secret: str, status: int) -> ClientResponse:
    """Delivers until the answer is `status`; a generous deadline, no timing claim."""
    deadline = time.monotonic() + 30.0
    while True:
        response = await _deliver(client, hook, secret)
        if response.status == status or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.1)


async def _rotate(world: World, hook: str) -> None:
    """Rotates the secret in the database (the test reaches it directly, not through the
    proxy) and announces it, as the api does."""
    async with world.sessions() as session:
        row = await session.get(Webhook, hook)
        assert row is not None
        row.secret_encrypted = world.box.encrypt(ROTATED)
        session.add(row)
        await session.commit()
    connection = await aio_pika.connect_robust(world.amqp_url)
    async with connection:
        await publish_broadcast(
            connection, world.topology, ConfigChanged(kind="webhook", name=hook)
        )


async def test_stale_configuration_serves_during_a_database_outage(
    world: World, proxy: TcpProxy
) -> None:
    kept, rotated = await world.webhook(), await world.webhook()
    # A short TTL, so every delivery during the outage is past it.
    client = await _ingress(world, proxy, config_cache_seconds=0.2)
    assert (await _deliver(client, kept)).status == 202
    assert (await _deliver(client, rotated)).status == 202

    await proxy.cut()
    await asyncio.sleep(0.3)
    for _ in range(3):
        assert (await _deliver(client, kept)).status == 202
        assert (await _deliver(client, rotated)).status == 202
    assert await _metric(client, 'kriten_ingress_config_cache_total{result="stale"}') >= 6
    assert await _metric(client, "kriten_ingress_config_read_failures_total") >= 1
    # The database is not needed to accept, so it does not decide readiness.
    ready = await client.get("/readyz")
    assert ready.status == 200, await ready.text()

    # Never seen before: nothing to serve, so 503 and not 404 (it may well exist).
    unknown = await _deliver(client, str(uuid.uuid4()))
    assert unknown.status == 503
    assert unknown.headers["Retry-After"] == "5"
    assert await unknown.json() == {"error": "webhook configuration unavailable"}

    # A rotation announced during the outage: the old secret must stop working, and the
    # new configuration cannot be read, so that webhook alone is 503.
    await _rotate(world, rotated)
    refused = await _until(client, rotated, SECRET, 503)
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "5"
    assert (await _deliver(client, rotated, ROTATED)).status == 503
    assert (await _deliver(client, kept)).status == 202
    assert (
        await _metric(client, 'kriten_ingress_rejections_total{reason="configuration unavailable"}')
        >= 3
    )

    await proxy.restore()
    assert (await _until(client, rotated, ROTATED, 202)).status == 202
    assert (await _deliver(client, rotated)).status == 401
    assert (await _deliver(client, kept)).status == 202
    # Every 202 is a job request on the queue (more than 10 if deliveries raced the
    # rotation's announcement, which the old secret may still pass until it arrives).
    events = await world.drain(until=lambda es: len(requests(es)) >= 10)
    assert len(requests(events)) >= 10


async def test_stale_configuration_is_bounded(world: World, proxy: TcpProxy) -> None:
    hook = await world.webhook()
    client = await _ingress(
        world, proxy, config_cache_seconds=0.2, config_stale_if_error_seconds=1.0
    )
    assert (await _deliver(client, hook)).status == 202
    await proxy.cut()
    await asyncio.sleep(0.3)
    assert (await _deliver(client, hook)).status == 202
    await asyncio.sleep(1.0)
    late = await _deliver(client, hook)
    assert late.status == 503
    assert "Retry-After" in late.headers
