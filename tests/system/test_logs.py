"""Logs an operator can follow (issue 12), read from the four services run as processes:
every line of every service is one JSON object; one delivery is followed across the
services by its correlation id; a cut of the broker connection is one warning and one
`broker_reconnected` per service, without a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from kriten_common.amqp import Topology
from tests.system import scenario
from tests.system.harness import KritenClient, ServiceProcess, make_task_repo, running, services_of
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.system]

NAMES = ("api", "ingress", "dispatcher", "collector")
# Longer than aio-pika's reconnect interval (5 s): the services try, and fail, at least
# once while the broker is away.
CUT_SECONDS = 7.0


@dataclass
class Deployment:
    client: KritenClient
    ingress_url: str
    repo_url: str
    services: dict[str, ServiceProcess]
    proxy: TcpProxy


Start = Callable[[], Awaitable[Deployment]]


@pytest.fixture
async def deployment(
    postgres_url: str, amqp_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Deployment]:
    """The four services, reaching RabbitMQ through a proxy the test can cut."""
    broker = URL(amqp_url)
    proxy = TcpProxy(broker.host or "127.0.0.1", broker.port or 5672)
    proxied = broker.with_host("127.0.0.1").with_port(await proxy.start())
    env = {
        "KRITEN_DATABASE_URL": postgres_url,
        "KRITEN_AMQP_URL": str(proxied),
        "KRITEN_AMQP_PREFIX": topology.prefix,
        "KRITEN_JOBS_DIR": str(tmp_path / "jobs"),
        "KRITEN_LOG_FORMAT": "json",
    }
    try:
        async with running(services_of(env, tmp_path, *NAMES)) as started:
            services = dict(zip(NAMES, started, strict=True))
            client = KritenClient(services["api"].url)
            try:
                yield Deployment(
                    client, services["ingress"].url, make_task_repo(tmp_path), services, proxy
                )
            finally:
                await client.close()
                # In threads: the proxy runs on this event loop, and each service talks
                # to the broker through it while it stops.
                await asyncio.gather(
                    *(asyncio.to_thread(service.stop) for service in services.values())
                )
    finally:
        await proxy.close()


def json_lines(service: ServiceProcess, start: int = 0) -> list[dict[str, Any]]:
    """Every line of the service's output from byte `start`, each checked to be one JSON
    object with an event, a level, a time and the service's name."""
    with service.log_path.open("rb") as output:
        output.seek(start)
        text = output.read().decode()
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"{service.name}: line {number} is not JSON: {line!r}") from None
        assert isinstance(entry, dict), (service.name, line)
        assert {"event", "level", "timestamp"} <= entry.keys(), (service.name, line)
        assert entry["service"] == service.name, line
        found.append(entry)
    return found


async def test_one_delivery_is_followed_across_the_services_by_its_correlation_id(
    deployment: Deployment,
) -> None:
    client = deployment.client
    webhook = await scenario.set_up(client, deployment.repo_url)
    run_url = f"{deployment.ingress_url}/api/v1/webhooks/run/{webhook['id']}"
    body = scenario.infrahub_body(name="sw-logs")
    status, answer = await scenario.deliver(client, run_url, body, scenario.infrahub_headers(body))
    assert status == 202, answer
    job = await client.wait_job(answer["id"])
    assert job["status"] == "succeeded", job
    job_id, correlation_id = job["id"], job["delivery_id"]
    assert correlation_id
    # Every line written until the end, the shutdown's included.
    await asyncio.gather(
        *(asyncio.to_thread(service.stop) for service in deployment.services.values())
    )

    lines = {name: json_lines(service) for name, service in deployment.services.items()}
    followed = {
        name: [line for line in found if line.get("correlation_id") == correlation_id]
        for name, found in lines.items()
    }
    # Where the delivery went, it left lines with its correlation id.
    for name in ("ingress", "dispatcher", "collector"):
        assert followed[name], f"{name} logged nothing with the delivery's correlation id"
    assert "webhook_accepted" in {line["event"] for line in followed["ingress"]}
    assert "job_dispatched" in {line["event"] for line in followed["dispatcher"]}
    assert "job_finished" in {line["event"] for line in followed["collector"]}
    for name, found in lines.items():
        for line in found:
            # Every line about the job carries the delivery's correlation id...
            if line.get("job_id") == job_id:
                assert line.get("correlation_id") == correlation_id, (name, line)
            # ...and every line with that id is about this job and webhook only.
            if line.get("correlation_id") == correlation_id:
                assert line.get("job_id", job_id) == job_id, (name, line)
                assert line.get("webhook_id", webhook["id"]) == webhook["id"], (name, line)
    accepted = next(line for line in followed["ingress"] if line["event"] == "webhook_accepted")
    assert (accepted["job_id"], accepted["webhook_id"]) == (job_id, webhook["id"])


async def _all_ready(services: dict[str, ServiceProcess]) -> bool:
    async with aiohttp.ClientSession() as session:
        for service in services.values():
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{service.url}/readyz") as response:
                    if response.status == 200:
                        continue
            return False
    return True


async def test_a_broker_cut_is_one_warning_and_one_reconnected_per_service(
    deployment: Deployment,
) -> None:
    services = deployment.services
    before = {name: service.log_path.stat().st_size for name, service in services.items()}
    await deployment.proxy.cut()
    await asyncio.sleep(CUT_SECONDS)
    await deployment.proxy.restore()

    deadline = time.monotonic() + 60
    while True:
        reconnected = {
            name
            for name, service in services.items()
            if any(line["event"] == "broker_reconnected" for line in json_lines(service))
        }
        if reconnected == set(NAMES) and await _all_ready(services):
            break
        assert time.monotonic() < deadline, f"only {sorted(reconnected)} reconnected"
        await asyncio.sleep(0.5)
    # Time for what a late callback or a retry loop would still say about the cut.
    await asyncio.sleep(3)
    for name, service in services.items():
        # The whole story of the cut, in each service: nothing from the libraries, no
        # traceback, no line per channel, subscription or attempt.
        said = [(line["event"], line["level"]) for line in json_lines(service, before[name])]
        assert said == [
            ("broker_connection_lost", "warning"),
            ("broker_reconnected", "info"),
        ], (name, said)

    # And the way through works again, without a word more about the cut.
    webhook = await scenario.set_up(deployment.client, deployment.repo_url)
    run_url = f"{deployment.ingress_url}/api/v1/webhooks/run/{webhook['id']}"
    await scenario.webhook_runs_the_task(deployment.client, run_url, "netbox")
    for name, service in services.items():
        lines = json_lines(service, before[name])
        loud = [line["event"] for line in lines if line["level"] not in ("debug", "info")]
        assert loud == ["broker_connection_lost"], (name, loud)
        assert [line for line in lines if "exception" in line or "logger" in line] == [], name
