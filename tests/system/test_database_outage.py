"""A PostgreSQL outage longer than any attempt budget loses no job request.

The dispatcher and collector run as processes and reach PostgreSQL through a TCP proxy
the test cuts for 20 s while job requests keep arriving. Afterwards every request must
have exactly one job row, final and succeeded: the consumers waited the outage out in
their delay queues (backoff) instead of using up attempts and dead-lettering. The
dispatcher is also stopped (SIGTERM) and started again in the middle of the outage.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aio_pika
import pytest
from sqlalchemy.engine import make_url
from sqlmodel import col, select

from kriten_api.migrate import upgrade_database
from kriten_common.amqp import Publisher, Topology, connect
from kriten_common.db.engine import create_engine, session_factory
from kriten_common.db.models import Job, Runner, Task
from kriten_common.messages import JobRequested
from tests.system.harness import make_task_repo, running, services_of
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.system]

BEFORE, DURING, AFTER = 10, 20, 10
OUTAGE_SECONDS = 20.0  # longer than the ~9 s the old ten attempts of 1 s lasted


def request(number: int) -> JobRequested:
    return JobRequested(
        job_id=f"true-{number:03d}",
        task="true",
        owner="root",
        owner_id="u",
        source="api",
        input="{}",
    )


async def _jobs(postgres_url: str) -> dict[str, str]:
    engine = create_engine(postgres_url)
    try:
        async with session_factory(engine)() as session:
            rows = (await session.exec(select(Job.id, Job.status).order_by(col(Job.id)))).all()
    finally:
        await engine.dispose()
    return dict(rows)


async def _dead_letters(amqp_url: str, topology: Topology) -> int:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(topology.dead_letter_queue, passive=True)
        return queue.declaration_result.message_count or 0


async def test_a_database_outage_loses_no_job(
    postgres_url: str, amqp_url: str, topology: Topology, tmp_path: Path
) -> None:
    await upgrade_database(postgres_url)
    engine = create_engine(postgres_url)
    async with session_factory(engine)() as session:
        session.add(Runner(name="local", git_url=make_task_repo(tmp_path)))
        await session.commit()
        session.add(Task(name="true", runner="local", command="true"))
        await session.commit()
    await engine.dispose()

    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=await proxy.start())
    env = {
        "KRITEN_DATABASE_URL": proxied.render_as_string(hide_password=False),
        "KRITEN_AMQP_URL": amqp_url,
        "KRITEN_AMQP_PREFIX": topology.prefix,
        "KRITEN_JOBS_DIR": str(tmp_path / "jobs"),
        "KRITEN_LOG_FORMAT": "json",
    }
    services = services_of(env, tmp_path, "dispatcher", "collector")
    dispatcher = services[0]
    connection = await connect(amqp_url)
    try:
        async with running(services):
            publisher = Publisher(connection, topology)
            await publisher.open()
            numbers = iter(range(BEFORE + DURING + AFTER))
            for number in (next(numbers) for _ in range(BEFORE)):
                await publisher.publish(request(number))
                await asyncio.sleep(0.2)
            await proxy.cut()
            for step, number in enumerate(next(numbers) for _ in range(DURING)):
                await publisher.publish(request(number))
                await asyncio.sleep(OUTAGE_SECONDS / DURING)
                if step == DURING // 2:
                    # A SIGTERM with events backing off loses none: they wait in the
                    # delay queues for the next instance. (In a thread: the proxy runs
                    # on this event loop, and the service talks to it while it stops.)
                    assert await asyncio.to_thread(dispatcher.stop) == 0, dispatcher.logs()
                    dispatcher.start()  # not waited for: it is not ready without a database
            await proxy.restore()
            for number in numbers:
                await publisher.publish(request(number))
                await asyncio.sleep(0.2)

            expected = {request(n).job_id for n in range(BEFORE + DURING + AFTER)}
            restored_at = time.monotonic()
            # The longest wait is a request that failed three times in the outage:
            # 1 + 5 + 30 s of backoff, plus its run.
            deadline = restored_at + 120
            jobs: dict[str, str] = {}
            while time.monotonic() < deadline:
                jobs = await _jobs(postgres_url)
                if set(jobs) >= expected and all(
                    status in ("succeeded", "failed", "cancelled") for status in jobs.values()
                ):
                    break
                await asyncio.sleep(1)
            print(f"all jobs final {time.monotonic() - restored_at:.1f} s after the restore")
            missing = sorted(expected - set(jobs))
            not_succeeded = {job: status for job, status in jobs.items() if status != "succeeded"}
            dead_letters = await _dead_letters(amqp_url, topology)
            logs = "\n".join(service.logs()[-3000:] for service in services)
            assert (len(missing), not_succeeded, dead_letters) == (0, {}, 0), (
                f"{len(missing)} of {len(expected)} jobs missing {missing}, not succeeded"
                f" {not_succeeded}, {dead_letters} dead letters\n{logs}"
            )
            assert '"event_backoff_scheduled"' in dispatcher.logs()
            for service in services:
                assert await asyncio.to_thread(service.stop) == 0, service.logs()
    finally:
        await connection.close()
        await proxy.close()
