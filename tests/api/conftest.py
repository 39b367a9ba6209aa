"""An in-process api app on a fresh database and the test's own broker topology."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from kriten_api.app import create_app
from kriten_api.settings import ApiSettings
from kriten_common.amqp import BroadcastSubscription, Topology
from kriten_common.messages import ConfigChanged, Event

ApiClient = TestClient[Any, Any]


@pytest.fixture
def api_settings(sqlite_url: str, amqp_url: str, topology: Topology, tmp_path: Path) -> ApiSettings:
    return ApiSettings(
        database_url=SecretStr(sqlite_url),
        amqp_url=SecretStr(amqp_url),
        amqp_prefix=topology.prefix,
        jobs_dir=tmp_path / "jobs",
        sync_timeout=1.0,
    )


@pytest.fixture
async def api(
    api_settings: ApiSettings, aiohttp_client: Callable[..., Awaitable[ApiClient]]
) -> ApiClient:
    return await aiohttp_client(create_app(api_settings))


async def login(
    client: ApiClient, username: str = "root", password: str = "root"
) -> dict[str, str]:
    """Logs in; returns the Bearer header for the session."""
    response = await client.post(
        "/api/v1/login", json={"username": username, "password": password, "provider": "local"}
    )
    assert response.status == 200, await response.text()
    token = (await response.json())["token"]
    return {"Authorization": f"Bearer {token}"}


async def create(api: ApiClient, headers: dict[str, str], kind: str, **body: Any) -> Any:
    response = await api.post(f"/api/v1/{kind}", json=body, headers=headers)
    assert response.status == 200, await response.text()
    return await response.json()


async def get(api: ApiClient, headers: dict[str, str], path: str) -> Any:
    response = await api.get(f"/api/v1{path}", headers=headers)
    assert response.status == 200, await response.text()
    return await response.json()


@pytest.fixture
async def announced(amqp_url: str, topology: Topology) -> AsyncIterator[list[Event]]:
    """Every `config.changed` event published while the test runs."""
    seen: list[Event] = []

    async def handler(event: Event) -> None:
        seen.append(event)

    connection = await aio_pika.connect_robust(amqp_url)
    subscription = BroadcastSubscription(
        connection=connection,
        topology=topology,
        name="api-test",
        routing_keys=(ConfigChanged.routing_key,),
        handler=handler,
    )
    await subscription.start()
    yield seen
    await subscription.stop()
    await connection.close()
