"""Webhook intake across TWO ingress processes, with the api, dispatcher and collector as
processes too, on real RabbitMQ and PostgreSQL: a retry reaching the other replica runs
nothing, rotation and deletion reach both replicas within a second (their cache TTL is
set far longer, so only the `config.changed` events can explain it), and a flood of
bad signatures neither stops good deliveries nor fills the delivery log."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kriten_common.amqp import Topology
from tests.ingress.test_sender_bodies import (
    infrahub_node_update,
    infrahub_wire,
    netbox_device_update,
    netbox_wire,
)
from tests.system.harness import (
    COUNT_RUNS,
    KritenClient,
    ServiceProcess,
    free_port,
    make_task_repo,
    running,
    services_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.system]

SECRET = "intake-system-secret"
RUN = "/api/v1/webhooks/run/"


@dataclass
class Deployment:
    client: KritenClient
    ingresses: list[ServiceProcess]

    def run_urls(self, webhook_id: str) -> list[str]:
        return [f"{ingress.url}{RUN}{webhook_id}" for ingress in self.ingresses]


@pytest.fixture
async def deployment(
    postgres_url: str, amqp_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Deployment]:
    env = {
        "KRITEN_DATABASE_URL": postgres_url,
        "KRITEN_AMQP_URL": amqp_url,
        "KRITEN_AMQP_PREFIX": topology.prefix,
        "KRITEN_JOBS_DIR": str(tmp_path / "jobs"),
        "KRITEN_LOG_FORMAT": "json",
        "KRITEN_LOG_LEVEL": "warning",
        # Far longer than any wait below: a change seen in time came by event.
        "KRITEN_CONFIG_CACHE_SECONDS": "300",
    }
    ingresses = [
        ServiceProcess(f"ingress-{n}", "kriten_ingress", free_port(), env, tmp_path / f"i{n}.log")
        for n in (1, 2)
    ]
    api_env = {**env, "KRITEN_INGRESS_URL": ingresses[0].url}
    api = ServiceProcess("api", "kriten_api", free_port(), api_env, tmp_path / "api.log")
    workers = services_of(env, tmp_path, "dispatcher", "collector")
    async with running([api, *ingresses, *workers]):
        client = KritenClient(api.url)
        await client.login()
        await client.create(
            "/api/v1/runners",
            {"name": "python", "image": "python:3.11-slim", "gitURL": make_task_repo(tmp_path)},
        )
        await client.create(
            "/api/v1/tasks", {"name": "count-runs", "runner": "python", "command": COUNT_RUNS}
        )
        yield Deployment(client, ingresses)
        await client.close()


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def deliveries(client: KritenClient, webhook_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    found: Any = []
    while time.monotonic() < deadline:
        status, found = await client.call("GET", f"/api/v1/webhooks/{webhook_id}/deliveries")
        assert status == 200, found
        if len(found) >= count:
            return list(found)
        await asyncio.sleep(0.2)
    raise AssertionError(f"expected {count} deliveries, got {found}")


async def test_a_retry_on_the_other_replica_runs_nothing(
    deployment: Deployment, tmp_path: Path
) -> None:
    client = deployment.client
    hook = await client.create(
        "/api/v1/webhooks", {"task": "count-runs", "secret": SECRET, "scheme": "infrahub"}
    )
    first_url, second_url = deployment.run_urls(hook["id"])
    counter = tmp_path / "runs.txt"
    body = {**infrahub_node_update(event_id=str(uuid.uuid4())), "file": str(counter)}
    raw, headers = infrahub_wire(body, SECRET)
    status, first = await post(first_url, raw, headers)
    assert (status, first["status"]) == (202, "accepted"), first
    job = await client.wait_job(first["id"])
    assert job["status"] == "succeeded", job

    # Infrahub's retry: the same event id, a new webhook-id and timestamp, other replica.
    # That replica has not seen it and asks no database, so it answers `accepted`, with
    # the same job id; the dispatcher skips the finished job.
    raw, headers = infrahub_wire(body, SECRET)
    status, retry = await post(second_url, raw, headers)
    assert (status, retry["id"], retry["status"]) == (202, first["id"], "accepted")
    # And again on the first replica, which remembers the key without the database.
    raw, headers = infrahub_wire(body, SECRET)
    status, again = await post(first_url, raw, headers)
    assert (status, again["id"], again["status"]) == (202, first["id"], "duplicate")
    await asyncio.sleep(1.0)  # time for a second run, were there one
    assert counter.read_text() == "run\n"

    logged = await deliveries(client, hook["id"], 3)
    assert sorted(d["outcome"] for d in logged) == ["accepted", "duplicate", "duplicate"]
    assert {d["job_id"] for d in logged} == {first["id"]}
    accepted = next(d for d in logged if d["outcome"] == "accepted")

    # Redelivery runs the stored body again, as a new job.
    status, rerun = await client.call(
        "POST", f"/api/v1/webhooks/{hook['id']}/deliveries/{accepted['id']}/redeliver"
    )
    assert status == 202, rerun
    assert rerun["id"] != first["id"]
    assert (await client.wait_job(rerun["id"]))["status"] == "succeeded"
    assert counter.read_text() == "run\nrun\n"

    # The test delivery is signed by the api and sent to an ingress process.
    status, tested = await client.call(
        "POST",
        f"/api/v1/webhooks/{hook['id']}/test",
        json={"body": {"file": str(tmp_path / "tested.txt")}},
    )
    assert (status, tested["status"]) == (202, "accepted"), tested
    assert (await client.wait_job(tested["id"]))["status"] == "succeeded"
    assert (tmp_path / "tested.txt").read_text() == "run\n"


async def statuses(urls: list[str], secret: str) -> list[int]:
    answers = []
    for url in urls:
        raw, headers = netbox_wire(netbox_device_update(name=str(uuid.uuid4())), secret)
        answers.append((await post(url, raw, headers))[0])
    return answers


async def within_a_second(urls: list[str], secret: str, expected: int) -> float:
    """Seconds until every replica answers `expected` for `secret` (fails after one)."""
    started = time.monotonic()
    seen: list[int] = []
    while time.monotonic() - started < 1.0:
        seen = await statuses(urls, secret)
        if all(status == expected for status in seen):
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"after 1 s the replicas answered {seen}, not {expected}")


async def test_rotation_and_deletion_reach_both_replicas_within_a_second(
    deployment: Deployment,
) -> None:
    client = deployment.client
    hook = await client.create(
        "/api/v1/webhooks", {"task": "count-runs", "secret": SECRET, "scheme": "netbox"}
    )
    urls = deployment.run_urls(hook["id"])
    assert await statuses(urls, SECRET) == [202, 202]  # both replicas have it cached

    status, rotated = await client.call(
        "POST", f"/api/v1/webhooks/{hook['id']}/rotate", json={"grace_seconds": 0}
    )
    assert status == 200
    await within_a_second(urls, SECRET, 401)
    assert await statuses(urls, rotated["secret"]) == [202, 202]

    status, with_grace = await client.call("POST", f"/api/v1/webhooks/{hook['id']}/rotate")
    assert status == 200
    await within_a_second(urls, with_grace["secret"], 202)
    assert await statuses(urls, rotated["secret"]) == [202, 202]  # the previous, in grace
    # The log is written by the collector a moment later: wait for these two.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        logged = await deliveries(client, hook["id"], 1)
        if sum(d["secret_matched"] == "previous" for d in logged) == 2:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"two deliveries matching the previous secret: {logged}")

    status, _ = await client.call("DELETE", f"/api/v1/webhooks/{hook['id']}")
    assert status == 200
    await within_a_second(urls, with_grace["secret"], 404)


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.split()[-1])
    return total


async def test_a_flood_of_bad_signatures_leaves_good_deliveries_working(
    deployment: Deployment,
) -> None:
    client = deployment.client
    hook = await client.create(
        "/api/v1/webhooks", {"task": "count-runs", "secret": SECRET, "scheme": "netbox"}
    )
    urls = deployment.run_urls(hook["id"])
    bad_raw, bad_headers = netbox_wire(netbox_device_update(), "an-attackers-guess")
    flood = 10_000
    good: list[int] = []
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def bad(n: int) -> int:
            async with session.post(urls[n % 2], data=bad_raw, headers=bad_headers) as response:
                await response.read()
                return response.status

        async def good_one(n: int) -> None:
            raw, headers = netbox_wire(netbox_device_update(name=f"good-{n}"), SECRET)
            async with session.post(urls[n % 2], data=raw, headers=headers) as response:
                await response.read()
                good.append(response.status)

        for start in range(0, flood, 500):  # bounded: 20 rounds of 500
            batch = [bad(n) for n in range(start, start + 500)]
            results = await asyncio.wait_for(
                asyncio.gather(*batch, good_one(start // 500)), timeout=60
            )
            assert set(results[:-1]) == {401}
    elapsed = time.monotonic() - started

    assert good == [202] * 20
    counted = 0.0
    async with aiohttp.ClientSession() as session:
        for ingress in deployment.ingresses:
            async with session.get(f"{ingress.url}/metrics") as response:
                text = await response.text()
            counted += metric(text, 'kriten_ingress_rejections_total{reason="bad signature"}')
    assert counted == flood  # every rejection counted, logged or not

    await asyncio.sleep(2.0)  # let the collector store what was published
    status, page = await client.call("GET", f"/api/v1/webhooks/{hook['id']}/deliveries")
    assert status == 200
    total_rejected = sum(1 for d in page if d["outcome"] == "rejected")
    # Per replica: a burst of 20, then one a second (the defaults).
    bound = 2 * (20 + int(elapsed) + 3)
    assert 0 < total_rejected <= bound, (total_rejected, bound, elapsed)
    print(json.dumps({"flood_seconds": round(elapsed, 1), "rejected_rows": total_rejected}))
