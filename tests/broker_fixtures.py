"""RabbitMQ for integration tests: a real broker, and a topology prefix of the test's own.

The broker URL comes from `KRITEN_TEST_AMQP_URL`; without it, a RabbitMQ container is
started when Docker is available, else the machine's broker at 127.0.0.1:5672 is used.
Each test gets its own prefix (exchange and queue names), deleted afterwards, so runs
never see each other's messages.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator

import aio_pika
import pytest

from kriten_common.amqp import Topology, delete_topology

MACHINE_BROKER = "amqp://guest:guest@127.0.0.1:5672/"


def docker_available() -> bool:
    return shutil.which("docker") is not None and os.path.exists("/var/run/docker.sock")


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    configured = os.environ.get("KRITEN_TEST_AMQP_URL")
    if configured:
        yield configured
        return
    if docker_available():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(5672)
            yield f"amqp://guest:guest@{host}:{port}/"
        return
    yield MACHINE_BROKER


@pytest.fixture
def amqp_prefix() -> str:
    return f"kriten-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def topology(amqp_url: str, amqp_prefix: str) -> AsyncIterator[Topology]:
    """The test's own topology, removed from the broker at the end."""
    topology = Topology(amqp_prefix)
    yield topology
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await delete_topology(channel, topology)
