"""A request the dispatcher gives up on ends recorded on its job, on real RabbitMQ and a
real database: the dispatcher's consumer dead-letters it, its hook publishes
`JobDispatchFailed`, and the collector marks the job failed with the reason. Once the
cause is fixed, replaying the dead letter runs the job, once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from kriten_collector.collecting import Collector
from kriten_collector.job_store import JobStore
from kriten_collector.local_observer import LocalJobObserver
from kriten_common.amqp import Consumer, Publisher, Topology, connect
from kriten_common.crypto import SecretBox
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import Job, Runner, Task
from kriten_common.dead_letters import browse, replay
from kriten_common.messages import JobRequested
from kriten_common.settings import DEVELOPMENT_ENCRYPTION_KEY
from kriten_dispatcher.dispatching import Dispatcher
from kriten_dispatcher.local_executor import LocalJobLauncher
from kriten_dispatcher.ports import JobLauncher
from tests.dispatcher.test_dispatching import CountingLauncher

pytestmark = pytest.mark.integration


async def _job(
    sessions: SessionFactory, job_id: str, timeout: float = 15, status: str = "failed"
) -> Job:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        async with sessions() as session:
            job = await session.get(Job, job_id)
        if job is not None and job.status == status:
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} not {status} in {timeout}s")


@pytest.fixture
async def publisher(amqp_url: str, topology: Topology) -> AsyncIterator[Publisher]:
    connection = await connect(amqp_url)
    async with connection:
        publisher = Publisher(connection, topology)
        await publisher.open()
        yield publisher
        await publisher.close()


@contextlib.asynccontextmanager
async def running(
    connection: AbstractRobustConnection,
    topology: Topology,
    *,
    sessions: SessionFactory,
    publisher: Publisher,
    launcher: JobLauncher,
    jobs_dir: Path,
) -> AsyncIterator[None]:
    """The dispatcher's and the collector's consumers, and the collector's observer."""
    dispatcher = Dispatcher(
        launcher=launcher,
        publisher=publisher,
        sessions=sessions,
        box=SecretBox(DEVELOPMENT_ENCRYPTION_KEY),
        executor="local",
    )
    collector = Collector(
        store=JobStore(sessions),
        publisher=publisher,
        observer=LocalJobObserver(jobs_dir=jobs_dir, output_cap_bytes=1024),
    )
    consumers = [
        Consumer(
            connection=connection,
            topology=topology,
            consumer="dispatcher.job-requested",
            handler=dispatcher.handle,
            on_dead_letter=dispatcher.on_dead_letter,
        ),
        Consumer(
            connection=connection,
            topology=topology,
            consumer="collector.events",
            handler=collector.handle,
        ),
    ]
    for consumer in consumers:
        await consumer.start()
    observing = asyncio.create_task(collector.observe())
    try:
        yield
    finally:
        observing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await observing
        for consumer in consumers:
            await consumer.stop()


async def test_a_request_for_a_vanished_task_ends_failed_on_its_job(
    amqp_url: str,
    topology: Topology,
    db_sessions: SessionFactory,
    publisher: Publisher,
    tmp_path: Path,
) -> None:
    connection = await connect(amqp_url)
    async with (
        connection,
        running(
            connection,
            topology,
            sessions=db_sessions,
            publisher=publisher,
            launcher=CountingLauncher(),
            jobs_dir=tmp_path,
        ),
    ):
        await publisher.publish(
            JobRequested(
                job_id="gone-1",
                task="gone",
                owner="root",
                owner_id="u",
                source="api",
                input="{}",
                correlation_id="corr-1",
            )
        )
        job = await _job(db_sessions, "gone-1")
    assert job.error == "task 'gone' no longer exists"
    assert job.task == "gone"  # the request's own fields are there too, whatever the order
    reader = await aio_pika.connect(amqp_url)
    async with reader:
        channel = await reader.channel()
        queue = await channel.get_queue(topology.dead_letter_queue)
        dead = await queue.get(fail=False, no_ack=True)
        assert dead is not None
        assert await queue.get(fail=False, no_ack=True) is None  # exactly one
    headers = dead.headers or {}
    assert headers["x-kriten-job-id"] == "gone-1"
    assert headers["x-kriten-reason"] == "task 'gone' no longer exists"
    assert headers["x-kriten-queue"] == topology.queue("dispatcher.job-requested")


async def test_replaying_the_dead_letter_runs_the_job_once(
    amqp_url: str,
    topology: Topology,
    db_sessions: SessionFactory,
    publisher: Publisher,
    git_repo: Path,
    jobs_dir: Path,
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    connection = await connect(amqp_url)
    async with (
        connection,
        running(
            connection,
            topology,
            sessions=db_sessions,
            publisher=publisher,
            launcher=LocalJobLauncher(jobs_dir=jobs_dir),
            jobs_dir=jobs_dir,
        ),
    ):
        # The task does not exist yet: the request is dead-lettered, the job failed.
        await publisher.publish(
            JobRequested(
                job_id="later-1",
                task="later",
                owner="root",
                owner_id="u",
                source="api",
                input="{}",
                correlation_id="corr-later",
            )
        )
        await _job(db_sessions, "later-1")
        async with db_sessions() as session:
            session.add(Runner(name="local", git_url=f"file://{git_repo}"))
            await session.commit()
            session.add(Task(name="later", runner="local", command=f"echo run >> {runs}"))
            await session.commit()
        (dead,) = await browse(connection, topology, limit=10)
        assert dead.job_id == "later-1"
        assert await replay(connection, topology, dead.id) is not None
        job = await _job(db_sessions, "later-1", timeout=60, status="succeeded")
        assert await browse(connection, topology, limit=10) == []
    assert job.exit_code == 0
    assert job.error is None
    assert runs.read_text() == "run\n"
