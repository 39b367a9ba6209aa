"""The delivery log through the api, with every service composed in one process as in
development mode (on PostgreSQL and RabbitMQ): deliveries recorded by the collector,
listed newest first, read one by one, redelivered, and test deliveries that go through
the real run endpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from kriten_api.settings import ApiSettings
from kriten_collector.settings import CollectorSettings
from kriten_common.amqp import Topology
from kriten_dispatcher.settings import DispatcherSettings
from kriten_ingress.settings import IngressSettings
from kriten_launcher.__main__ import create_app
from tests.api.conftest import login
from tests.ingress.test_sender_bodies import netbox_device_update, netbox_wire
from tests.system.harness import make_task_repo

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]
SECRET = "deliveries-test-secret"


@pytest.fixture
async def kriten(
    postgres_url: str,
    amqp_url: str,
    topology: Topology,
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> Client:
    common: dict[str, Any] = {
        "database_url": SecretStr(postgres_url),
        "amqp_url": SecretStr(amqp_url),
        "amqp_prefix": topology.prefix,
        "jobs_dir": tmp_path / "jobs",
    }
    app = create_app(
        ApiSettings(**common),
        IngressSettings(**common),
        DispatcherSettings(**common),
        CollectorSettings(**common),
    )
    return await aiohttp_client(app)


async def set_up(client: Client, tmp_path: Path, scheme: str) -> tuple[dict[str, str], str]:
    headers = await login(client)
    runner = {"name": "python", "image": "python:3.11-slim", "gitURL": make_task_repo(tmp_path)}
    assert (await client.post("/api/v1/runners", json=runner, headers=headers)).status == 200
    task = {"name": "echo", "runner": "python", "command": "echo ran"}
    assert (await client.post("/api/v1/tasks", json=task, headers=headers)).status == 200
    body = {"task": "echo", "secret": SECRET, "scheme": scheme}
    response = await client.post("/api/v1/webhooks", json=body, headers=headers)
    assert response.status == 200
    return headers, (await response.json())["id"]


async def wait_for(
    client: Client, path: str, headers: dict[str, str], count: int, seconds: float = 20.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        response = await client.get(path, headers=headers)
        assert response.status == 200, await response.text()
        items = await response.json()
        # The count and the page are two queries: a delivery stored between them is in
        # one and not the other, until the next read.
        if len(items) >= count and int(response.headers["Content-Range"]) == len(items):
            return items
        await asyncio.sleep(0.1)
    raise AssertionError(f"{count} items expected at {path}, got {items}")


async def test_deliveries_are_logged_listed_and_redelivered(kriten: Client, tmp_path: Path) -> None:
    headers, hook = await set_up(kriten, tmp_path, "netbox")
    run = f"/api/v1/webhooks/run/{hook}"
    raw, signed = netbox_wire(netbox_device_update(), SECRET)
    accepted = await kriten.post(run, data=raw, headers=signed)
    assert accepted.status == 202
    job_id = (await accepted.json())["id"]
    await asyncio.sleep(0.05)  # distinct received_at for the order below
    bad_raw, bad = netbox_wire(netbox_device_update(), "wrong-secret")
    assert (await kriten.post(run, data=bad_raw, headers=bad)).status == 401

    listed = await wait_for(kriten, f"/api/v1/webhooks/{hook}/deliveries", headers, 2)
    assert [d["outcome"] for d in listed] == ["rejected", "accepted"]  # newest first
    assert listed[0]["reason"] == "bad signature"
    assert all("body" not in d for d in listed)
    only = await kriten.get(
        f"/api/v1/webhooks/{hook}/deliveries?outcome=rejected&limit=5", headers=headers
    )
    assert only.headers["Content-Range"] == "1"
    page = await kriten.get(f"/api/v1/webhooks/{hook}/deliveries?limit=1&offset=1", headers=headers)
    assert [d["outcome"] for d in await page.json()] == ["accepted"]

    delivery_id = listed[1]["id"]
    got = await (
        await kriten.get(f"/api/v1/webhooks/{hook}/deliveries/{delivery_id}", headers=headers)
    ).json()
    assert got["body"] == raw.decode()
    assert got["job_id"] == job_id
    assert got["secret_matched"] == "current"
    assert got["scheme"] == "netbox"
    assert got["source"] == "127.0.0.1"
    assert got["size"] == len(raw)
    assert got["headers"]["x-hook-signature"].endswith("…")
    rejected = await (
        await kriten.get(f"/api/v1/webhooks/{hook}/deliveries/{listed[0]['id']}", headers=headers)
    ).json()
    assert rejected["body"] is None

    again = await kriten.post(
        f"/api/v1/webhooks/{hook}/deliveries/{delivery_id}/redeliver", headers=headers
    )
    assert again.status == 202, await again.text()
    answer = await again.json()
    assert answer["status"] == "accepted"
    assert answer["msg"] == "job created successfully"
    assert answer["id"] != job_id
    assert answer["id"].startswith("echo-")
    job = await wait_for_job(kriten, answer["id"], headers)
    assert job["source"] == "webhook"
    assert job["webhook_id"] == hook
    listed = await wait_for(kriten, f"/api/v1/webhooks/{hook}/deliveries", headers, 3)
    assert listed[0]["reason"] == f"redelivery of {delivery_id}"
    assert listed[0]["job_id"] == answer["id"]

    refused = await kriten.post(
        f"/api/v1/webhooks/{hook}/deliveries/{rejected['id']}/redeliver", headers=headers
    )
    assert refused.status == 409
    missing = await kriten.get(f"/api/v1/webhooks/{hook}/deliveries/nope", headers=headers)
    assert missing.status == 404


async def wait_for_job(client: Client, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = await client.get(f"/api/v1/jobs/{job_id}", headers=headers)
        if response.status == 200:
            job: dict[str, Any] = await response.json()
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} never recorded")


@pytest.mark.parametrize("scheme", ["auto", "infrahub", "netbox", "github"])
async def test_test_delivery_goes_through_the_real_run_path(
    kriten: Client, tmp_path: Path, scheme: str
) -> None:
    headers, hook = await set_up(kriten, tmp_path, scheme)
    response = await kriten.post(f"/api/v1/webhooks/{hook}/test", headers=headers)
    assert response.status == 202, await response.text()
    answer = await response.json()
    assert answer["status"] == "accepted"
    assert answer["id"].startswith("echo-")
    listed = await wait_for(kriten, f"/api/v1/webhooks/{hook}/deliveries", headers, 1)
    expected = {"netbox": "netbox", "github": "github"}.get(scheme, "standard")
    assert listed[0]["scheme"] == expected
    assert listed[0]["headers"]["x-kriten-test"] == "1"


async def test_test_delivery_answers_what_the_run_endpoint_answers(
    kriten: Client, tmp_path: Path
) -> None:
    headers, hook = await set_up(kriten, tmp_path, "netbox")
    path = f"/api/v1/webhooks/{hook}"
    assert (await kriten.patch(path, json={"filter": "event == 'updated'"}, headers=headers)).ok
    response = await kriten.post(f"{path}/test", headers=headers)
    assert (response.status, (await response.json())["status"]) == (202, "filtered")
    response = await kriten.post(
        f"{path}/test", json={"body": {"event": "updated", "n": 1}}, headers=headers
    )
    assert (response.status, (await response.json())["status"]) == (202, "accepted")
    assert (await kriten.patch(path, json={"enabled": False}, headers=headers)).ok
    response = await kriten.post(f"{path}/test", headers=headers)
    assert response.status == 404
