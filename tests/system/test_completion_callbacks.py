"""Completion callbacks through the services as separate processes, on real RabbitMQ and
PostgreSQL: a task's callback set through the api, a job run through the api, and a
receiver started here that verifies the signature with the secret the api showed once,
answers 500 to the first attempt, and gets exactly one delivery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kriten_common.amqp import Topology
from tests.callback_receiver import Receiver, ServeReceiver
from tests.system.harness import KritenClient, make_task_repo, running, services_of

pytestmark = [pytest.mark.integration, pytest.mark.system]


@pytest.fixture
async def client(
    postgres_url: str, amqp_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[KritenClient]:
    env = {
        "KRITEN_DATABASE_URL": postgres_url,
        "KRITEN_AMQP_URL": amqp_url,
        "KRITEN_AMQP_PREFIX": topology.prefix,
        "KRITEN_JOBS_DIR": str(tmp_path / "jobs"),
        "KRITEN_LOG_FORMAT": "json",
        # The receiver runs on this machine; retries come after a second, not five.
        "KRITEN_CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
        "KRITEN_CALLBACK_FIRST_RETRY_SECONDS": "1",
    }
    names = ("api", "dispatcher", "collector")
    async with running(services_of(env, tmp_path, *names)) as started:
        kriten = KritenClient(started[0].url)
        yield kriten
        await kriten.close()
        for service in started:
            assert service.problems() == [], service.name


async def _until(check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_a_finished_job_is_delivered_once_after_a_500(
    client: KritenClient, serve_receiver: ServeReceiver, tmp_path: Path
) -> None:
    await client.login()
    await client.create(
        "/api/v1/runners",
        {"name": "python", "image": "python:3.11-slim", "gitURL": make_task_repo(tmp_path)},
    )
    # The secret is made by the api and shown once: the receiver learns it afterwards.
    receiver, failures = Receiver(statuses=(500,)), Receiver()
    hook, failures_hook = await serve_receiver(receiver), await serve_receiver(failures)
    task = await client.create(
        "/api/v1/tasks",
        {
            "name": "hello-kriten",
            "runner": "python",
            "command": "python examples/hello-kriten/hello-kriten.py",
            "callbacks": [
                {"url": hook, "events": ["succeeded"]},
                {"url": failures_hook, "events": ["failed"]},
            ],
        },
    )
    receiver.secret = failures.secret = task["callback_secret"]

    status, accepted = await client.call("POST", "/api/v1/jobs/hello-kriten", json={"a": 1})
    assert status == 200, accepted
    job = await client.wait_job(accepted["id"])
    assert job["status"] == "succeeded"

    await _until(lambda: receiver.delivered)
    ((webhook_id, body, _),) = receiver.delivered
    assert [call[2] for call in receiver.calls] == [500, 200]
    assert {call[0] for call in receiver.calls} == {webhook_id}
    # The job as the api answers it, without its output, with the event's type.
    assert body.pop("type") == "job.succeeded"
    assert body.pop("log_url") == f"/api/v1/jobs/{job['id']}/log"
    del job["stdout"]
    assert body == job
    assert failures.calls == []
    assert receiver.unverified == failures.unverified == 0

    status, log = await client.call(
        "GET", f"/api/v1/tasks/hello-kriten/callback_deliveries?job_id={job['id']}"
    )
    assert status == 200
    assert [(r["attempt"], r["status_code"], r["delivered"]) for r in log] == [
        (2, 200, True),
        (1, 500, False),
    ]
    assert {r["webhook_id"] for r in log} == {webhook_id}
    # Nothing more comes (no second delivery).
    await asyncio.sleep(1.5)
    assert len(receiver.calls) == 2
