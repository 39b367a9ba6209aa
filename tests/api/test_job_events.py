"""`job.finished` wakes the api's waiting requests: a synchronous run and a followed log.

The collector is not running: the test writes the job's row and publishes the collector's
`JobFinished` itself, in that order (the collector's order). The api's safety-net
re-reads are pushed out to an hour, so an answer proves the event woke the request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import ClientResponse
from sqlmodel import select

from kriten_api import job_events
from kriten_api.app import create_app
from kriten_api.keys import JOB_EVENTS, SESSIONS
from kriten_api.routes import jobs
from kriten_api.settings import ApiSettings
from kriten_common import admission
from kriten_common.amqp import Publisher, Topology, connect
from kriten_common.db.models import Job, User
from kriten_common.messages import JobFinished
from tests.api.conftest import ApiClient, login
from tests.api.test_resources import setup_task

pytestmark = pytest.mark.integration

AN_HOUR = 3600.0


@pytest.fixture
async def slow_api(
    api_settings: ApiSettings,
    aiohttp_client: Callable[..., Awaitable[ApiClient]],
    monkeypatch: pytest.MonkeyPatch,
) -> ApiClient:
    """An api whose only prompt way to see a job finish is the `job.finished` event."""
    monkeypatch.setattr(job_events, "FINISH_RECHECK_SECONDS", AN_HOUR)
    monkeypatch.setattr(jobs, "FOLLOW_OUTPUT_SECONDS", AN_HOUR)
    settings = api_settings.model_copy(update={"sync_timeout": 30.0})
    return await aiohttp_client(create_app(settings))


async def _announce(amqp_url: str, topology: Topology, job_id: str, task: str) -> None:
    """The collector's `JobFinished`, published as it does: not mandatory."""
    connection = await connect(amqp_url)
    async with connection:
        publisher = Publisher(connection, topology)
        await publisher.open()
        await publisher.publish(
            JobFinished(job_id=job_id, task=task, status="succeeded"), mandatory=False
        )
        await publisher.close()


async def _root_id(api: ApiClient) -> str:
    async with api.app[SESSIONS]() as session:
        return str((await session.exec(select(User.id).where(User.username == "root"))).one())


async def _until_watched(api: ApiClient, job_id: str) -> None:
    for _ in range(500):
        if api.app[JOB_EVENTS].watched(job_id):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no request waits for {job_id}")


async def test_a_synchronous_run_answers_when_job_finished_arrives(
    slow_api: ApiClient, amqp_url: str, topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = await login(slow_api)
    await setup_task(slow_api, root, synchronous=True)
    monkeypatch.setattr(admission, "random_suffix", lambda: "woken")
    job_id = "hello-kriten-woken"
    running: asyncio.Task[ClientResponse] = asyncio.create_task(
        slow_api.post("/api/v1/jobs/hello-kriten", data=b"", headers=root)
    )
    await _until_watched(slow_api, job_id)
    # The collector's order: the final row is committed, then `job.finished` announced.
    async with slow_api.app[SESSIONS]() as session:
        session.add(
            Job(
                id=job_id,
                task="hello-kriten",
                owner="root",
                owner_id=await _root_id(slow_api),
                status="succeeded",
                exit_code=0,
                stdout="done\n",
            )
        )
        await session.commit()
    await _announce(amqp_url, topology, job_id, "hello-kriten")
    response = await asyncio.wait_for(running, 20)
    assert response.status == 200
    body = await response.json()
    # The finished job itself, not the "job created" answer of a timed-out wait.
    assert (body["id"], body["status"], body["stdout"]) == (job_id, "succeeded", "done\n")
    assert not slow_api.app[JOB_EVENTS].watched(job_id)


async def test_a_followed_log_ends_when_job_finished_arrives(
    slow_api: ApiClient, amqp_url: str, topology: Topology
) -> None:
    root = await login(slow_api)
    owner_id = await _root_id(slow_api)
    job = Job(
        id="hello-followed",
        task="hello",
        owner="root",
        owner_id=owner_id,
        status="running",
        stdout="line 1\n",
    )
    async with slow_api.app[SESSIONS]() as session:
        session.add(job)
        await session.commit()
    stream = await slow_api.get("/api/v1/jobs/hello-followed/log?follow=true", headers=root)
    assert stream.status == 200
    # Written after the stream started watching the job: the event below cannot be missed.
    assert await asyncio.wait_for(stream.content.readline(), 10) == b"line 1\n"
    async with slow_api.app[SESSIONS]() as session:
        stored = await session.get(Job, "hello-followed")
        assert stored is not None
        stored.status, stored.stdout = "succeeded", "line 1\nline 2\n"
        await session.commit()
    await _announce(amqp_url, topology, "hello-followed", "hello")
    # The rest of the output, then the end of the stream, without the hourly re-read.
    assert await asyncio.wait_for(stream.content.read(), 20) == b"line 2\n"
