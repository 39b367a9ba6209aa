"""Restarts: a collector started while its predecessor's connections still look alive (a
process killed where the broker and the database did not hear of it: a frozen process, a
lost node) is ready and consuming at once; readiness names a missing dependency. On real
RabbitMQ and PostgreSQL, the collector as a process."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aio_pika
import aiohttp
import pytest
from sqlmodel import col, func, select

from kriten_common.amqp import COLLECTOR_EVENTS, Publisher, Topology, connect
from kriten_common.db.engine import create_engine, session_factory
from kriten_common.db.models import Job
from kriten_common.messages import JobRequested
from tests.system.harness import ServiceProcess, free_port

pytestmark = [pytest.mark.integration, pytest.mark.system, pytest.mark.timeout(120)]


def collector(env: dict[str, str], logs: Path, name: str) -> ServiceProcess:
    return ServiceProcess(name, "kriten_collector", free_port(), env, logs / f"{name}.log")


async def consumers(amqp_url: str, queue: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.consumer_count
        assert isinstance(count, int)
        return count


async def stored(database_url: str, job_ids: list[str]) -> int:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            found = await session.exec(
                select(func.count()).select_from(Job).where(col(Job.id).in_(job_ids))
            )
            return int(found.one())
    finally:
        await engine.dispose()


async def wait_stored(database_url: str, job_ids: list[str], at_least: int) -> int:
    for _ in range(300):
        count = await stored(database_url, job_ids)
        if count >= at_least:
            return count
        await asyncio.sleep(0.1)
    raise AssertionError(f"only {await stored(database_url, job_ids)} of {at_least} stored")


async def test_a_collector_is_ready_while_its_predecessor_still_looks_alive(
    migrated_postgres_url: str, amqp_url: str, topology: Topology, tmp_path: Path
) -> None:
    env = {
        "KRITEN_DATABASE_URL": migrated_postgres_url,
        "KRITEN_AMQP_URL": amqp_url,
        "KRITEN_AMQP_PREFIX": topology.prefix,
        "KRITEN_JOBS_DIR": str(tmp_path / "jobs"),
        "KRITEN_LOG_FORMAT": "json",
    }
    queue = topology.queue(COLLECTOR_EVENTS)
    old = collector(env, tmp_path, "collector-old")
    new = collector(env, tmp_path, "collector-new")
    try:
        old.start()
        await old.wait_ready()
        assert old.process is not None
        # Frozen: its broker and database connections stay open, silent, as those of a
        # process on a lost node do until the broker's heartbeat gives up on them.
        old.process.send_signal(signal.SIGSTOP)

        new.start()
        await new.wait_ready()
        # The old consumer is still registered: nothing exclusive held the new one back.
        assert await consumers(amqp_url, queue) == 2

        # One message each: the broker shares them between the two consumers, and the old
        # one takes at most its prefetch (32), which it will never acknowledge.
        job_ids = [f"t-restart-{i}" for i in range(40)]
        connection = await connect(amqp_url)
        async with connection:
            publisher = Publisher(connection, topology, max_batch=1)
            await publisher.open()
            for job_id in job_ids:
                await publisher.publish(
                    JobRequested(
                        job_id=job_id, task="t", owner="o", owner_id="u", source="api", input=""
                    )
                )
            await publisher.close()
        # The new collector consumes while the old connection lives on.
        await wait_stored(migrated_postgres_url, job_ids, at_least=len(job_ids) - 32)

        # The old one dies for good (kill -9): what it held comes back and is stored.
        old.process.send_signal(signal.SIGKILL)
        old.process.wait()
        await wait_stored(migrated_postgres_url, job_ids, at_least=len(job_ids))
    finally:
        new.stop()
        old.stop(signal.SIGKILL)


async def test_readiness_names_the_missing_database(
    amqp_url: str, topology: Topology, tmp_path: Path
) -> None:
    nothing_listens = free_port()
    env = {
        "KRITEN_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{nothing_listens}/x",
        "KRITEN_AMQP_URL": amqp_url,
        "KRITEN_AMQP_PREFIX": topology.prefix,
        "KRITEN_JOBS_DIR": str(tmp_path / "jobs"),
        "KRITEN_LOG_FORMAT": "json",
    }
    service = collector(env, tmp_path, "collector")
    service.start()
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"{service.url}/readyz") as response:
                        status, body = response.status, await response.json()
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"no answer:\n{service.logs()}")
        assert status == 503
        assert body["missing"] == ["database"]
        assert body["checks"] == {"database": False, "broker": True}
    finally:
        service.stop()
