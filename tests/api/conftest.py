"""An in-process api app on a fresh migrated database, and publishing recorded in memory.

The app of a test marked `broker`, or asking for `amqp_url`, `topology` or `announced`
itself, talks to the real RabbitMQ on the test's own topology instead (see
`tests/api_fixtures.py` for why the others do not).
"""

from __future__ import annotations

import inspect
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
from tests.api_fixtures import RecordingPublisher, without_broker

ApiClient = TestClient[Any, Any]
BuildApi = Callable[[ApiSettings], Awaitable[ApiClient]]

# Asking for one of these in the test's own signature means the test looks at the broker.
BROKER_FIXTURES = frozenset({"amqp_url", "topology", "announced"})
HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        if function is None or HERE not in item.path.parents:
            continue  # pytest hands a conftest every item of the session
        if item.get_closest_marker("broker") is not None:
            continue
        if BROKER_FIXTURES & set(inspect.signature(function).parameters):
            item.add_marker(pytest.mark.broker)


@pytest.fixture
def api_settings(
    migrated_sqlite_url: str, amqp_url: str, topology: Topology, tmp_path: Path
) -> ApiSettings:
    # `topology` even when the app records its publishing: a test that builds its own
    # app from these settings on the real broker must find its queues removed after it.
    return ApiSettings(
        database_url=SecretStr(migrated_sqlite_url),
        amqp_url=SecretStr(amqp_url),
        amqp_prefix=topology.prefix,
        jobs_dir=tmp_path / "jobs",
        sync_timeout=1.0,
    )


@pytest.fixture
def published() -> RecordingPublisher:
    """What the test's api apps published (none when the test is marked `broker`)."""
    return RecordingPublisher()


@pytest.fixture
def build_api(
    request: pytest.FixtureRequest,
    aiohttp_client: Callable[..., Awaitable[ApiClient]],
    published: RecordingPublisher,
) -> BuildApi:
    """Starts an api app on the given settings: on the real broker when the test is
    marked `broker`, else publishing into `published`."""
    real_broker = request.node.get_closest_marker("broker") is not None

    async def build(settings: ApiSettings) -> ApiClient:
        app = create_app(settings)
        if not real_broker:
            without_broker(app, published)
        return await aiohttp_client(app)

    return build


@pytest.fixture
async def api(api_settings: ApiSettings, build_api: BuildApi) -> ApiClient:
    return await build_api(api_settings)


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
