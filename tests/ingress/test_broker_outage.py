"""The run endpoint while RabbitMQ refuses it, for real: the ingress connects to a vhost of
its own as a user of its own; the test revokes the user's permissions and closes its
connections (`rabbitmqctl`), then grants them again.

While it cannot publish, every delivery is answered 503 with Retry-After (never 202,
never 500, and the request does not hang); afterwards it resumes by itself, its job
requests are on the queue, and its `config.changed` subscription works again.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from pydantic import SecretStr

from kriten_common.amqp import Topology, publish_broadcast
from kriten_common.db.models import Webhook
from kriten_common.messages import ConfigChanged, Event, JobRequested, decode
from kriten_ingress.app import create_app
from kriten_ingress.settings import IngressSettings
from tests.broker_fixtures import MACHINE_BROKER
from tests.ingress.test_run_endpoint import RUN, SECRET, Client, World, world
from tests.ingress.test_sender_bodies import netbox_device_update, netbox_wire

pytestmark = pytest.mark.integration
__all__ = ["world"]  # the fixture, imported to be found by pytest

REFUSED_SECONDS = 30.0
# Per request: far above a healthy answer, far below a sender's patience. A request held
# while the broker is away would be a hang, not an answer.
ANSWER_WITHIN_SECONDS = 15.0


async def _rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, (args, out.decode(), err.decode())


@pytest.fixture
async def broker_user(amqp_url: str) -> AsyncIterator[tuple[str, str, str]]:
    """(url, user, vhost): a vhost and a user of the test's own on the machine's broker."""
    if amqp_url != MACHINE_BROKER or shutil.which("rabbitmqctl") is None:
        reason = "needs the machine's RabbitMQ and rabbitmqctl (run as root)"
        # CI's machine has both: there, a missing one is a broken setup, not a skip.
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"kriten-test-{uuid.uuid4().hex[:12]}"
    password = uuid.uuid4().hex
    await _rabbitmqctl("add_vhost", name)
    await _rabbitmqctl("add_user", name, password)
    try:
        await _rabbitmqctl("set_permissions", "-p", name, name, ".*", ".*", ".*")
        yield f"amqp://{name}:{password}@127.0.0.1:5672/{name}", name, name
    finally:
        await _rabbitmqctl("delete_vhost", name)
        await _rabbitmqctl("delete_user", name)


async def _deliver(client: Client, hook: str, secret: str = SECRET) -> tuple[int, dict[str, str]]:
    raw, headers = netbox_wire(netbox_device_update(name=str(uuid.uuid4())), secret)
    async with asyncio.timeout(ANSWER_WITHIN_SECONDS):
        response = await client.post(RUN + hook, data=raw, headers=headers)
        body = await response.json()
    return response.status, {"Retry-After": response.headers.get("Retry-After", ""), **body}


async def _job_requests(url: str, topology: Topology) -> list[Event]:
    found: list[Event] = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.queue("dispatcher.job-requested"))
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            found.extend(decode(message.type or "", message.body))
    return found


async def test_ingress_answers_503_while_refused_by_the_broker_and_resumes(
    # broker_user first: set up before the app and so removed after it has shut down.
    broker_user: tuple[str, str, str],
    world: World,
) -> None:
    url, user, vhost = broker_user
    topology = Topology(world.topology.prefix)
    hook = await world.webhook()
    settings = IngressSettings(
        database_url=SecretStr(world.database_url),
        amqp_url=SecretStr(url),
        amqp_prefix=topology.prefix,
        config_cache_seconds=300.0,
    )
    client = await world.make_client(create_app(settings))
    status, answer = await _deliver(client, hook)
    assert status == 202, answer
    accepted = {answer["id"]}

    await _rabbitmqctl("clear_permissions", "-p", vhost, user)
    await _rabbitmqctl("close_all_user_connections", user, "test: broker refusal")
    refused_ids = set()
    refused_until = time.monotonic() + REFUSED_SECONDS
    answers = 0
    while time.monotonic() < refused_until:
        status, answer = await _deliver(client, hook)
        assert status == 503, answer
        assert answer["Retry-After"].isdigit(), answer
        answers += 1
        refused_ids.add(answer.get("id"))
        await asyncio.sleep(0.2)
    assert answers >= 5
    # Not ready while it cannot reach the broker, so a load balancer can tell.
    ready = await client.get("/readyz")
    assert ready.status == 503, await ready.text()

    await _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    deadline = time.monotonic() + 60.0
    while True:
        status, answer = await _deliver(client, hook)
        assert status in (202, 503), answer
        if status == 202 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert status == 202, answer
    accepted.add(answer["id"])

    # The subscription came back with the connection: with a 300 s TTL only the event
    # can make the old secret stop working.
    async with world.sessions() as session:
        row = await session.get(Webhook, hook)
        assert row is not None
        row.secret_encrypted = world.box.encrypt("rotated-secret-value")
        session.add(row)
        await session.commit()
    connection = await aio_pika.connect_robust(url)
    async with connection:
        await publish_broadcast(connection, topology, ConfigChanged(kind="webhook", name=hook))
    deadline = time.monotonic() + 10.0
    while status != 401 and time.monotonic() < deadline:
        status, answer = await _deliver(client, hook)
        if status == 202:
            accepted.add(answer["id"])
        await asyncio.sleep(0.1)
    assert status == 401

    # Exactly the accepted deliveries are on the queue: a 503 published nothing.
    await asyncio.sleep(0.5)
    queued = {e.job_id for e in await _job_requests(url, topology) if isinstance(e, JobRequested)}
    assert queued == accepted
