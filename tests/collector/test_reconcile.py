"""The collector's reconciliation: no job stays `queued` or `running` without an execution
behind it. On the real database (both backends), the real broker for `job.finished`, and
the local executor's job directories."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aio_pika
import pytest
from aiohttp import web
from sqlalchemy import update
from sqlmodel import col

from kriten_collector.app import create_app
from kriten_collector.collecting import Collector
from kriten_collector.job_store import JobStore, StaleJob
from kriten_collector.local_observer import NO_DIRECTORY_ERROR, LocalJobObserver
from kriten_collector.ports import ExecutionUpdate
from kriten_collector.reconcile import Reconciler, ReconcileSettings
from kriten_collector.settings import CollectorSettings
from kriten_common.amqp import Publisher, Topology, connect, declare_topology
from kriten_common.clock import utcnow
from kriten_common.db.engine import SessionFactory, create_engine, session_factory
from kriten_common.db.models import Job
from kriten_common.local_jobs import JobPaths
from kriten_common.messages import JobFinished, JobRequested, decode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

GRACE = timedelta(minutes=2)
QUEUED_GRACE = timedelta(hours=1)


def requested(job_id: str) -> JobRequested:
    return JobRequested(job_id=job_id, task="t", owner="root", owner_id="u", source="api", input="")


async def running_job(store: JobStore, job_id: str) -> None:
    await store.record_requested(requested(job_id))
    await store.record_update(ExecutionUpdate(job_id=job_id, state="running", start_time=utcnow()))


async def age(sessions: SessionFactory, job_id: str, by: timedelta) -> None:
    """Makes the job look unchanged for `by` (as if the collector had been away)."""
    async with sessions() as session:
        await session.exec(  # type: ignore[call-overload]
            update(Job).where(col(Job.id) == job_id).values(updated_at=utcnow() - by)
        )
        await session.commit()


async def stored(sessions: SessionFactory, job_id: str) -> Job:
    async with sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


@contextlib.asynccontextmanager
async def finished_events(
    amqp_url: str, topology: Topology
) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    """A queue of the test's own that gets every `job.finished`."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await declare_topology(channel, topology)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=JobFinished.routing_key)
        yield queue


async def next_finished(queue: aio_pika.abc.AbstractQueue) -> list[JobFinished]:
    for _ in range(100):
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            events = decode(message.type or "", message.body)
            return [e for e in events if isinstance(e, JobFinished)]
        await asyncio.sleep(0.05)
    raise AssertionError("no job.finished published")


async def test_jobs_without_an_execution_are_failed_and_announced(
    db_sessions: SessionFactory, amqp_url: str, topology: Topology, tmp_path: Path
) -> None:
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    store = JobStore(db_sessions)
    observer = LocalJobObserver(jobs_dir=jobs_dir)
    # Running, its directory pruned, unchanged past the grace: failed.
    await running_job(store, "t-pruned")
    await age(db_sessions, "t-pruned", GRACE * 2)
    # Running past the grace, its directory there: the observer's to report.
    await running_job(store, "t-alive")
    JobPaths.of(jobs_dir, "t-alive").root.mkdir()
    await age(db_sessions, "t-alive", GRACE * 2)
    # Running without a directory, but within the grace: left alone (just dispatched).
    await running_job(store, "t-recent")
    # Queued past its own, longer grace with nothing launched: failed.
    await store.record_requested(requested("t-lost"))
    await age(db_sessions, "t-lost", QUEUED_GRACE * 2)
    # Queued past the running grace only: its request may be waiting out a backoff.
    await store.record_requested(requested("t-waiting"))
    await age(db_sessions, "t-waiting", GRACE * 2)
    # Queued for hours behind the jobs of its concurrency key: waiting its turn.
    keyed = requested("t-keyed").model_copy(update={"concurrency_key": "device:1"})
    await store.record_requested(keyed)
    await age(db_sessions, "t-keyed", QUEUED_GRACE * 2)

    connection = await connect(amqp_url)
    async with connection, finished_events(amqp_url, topology) as finished:
        publisher = Publisher(connection, topology)
        await publisher.open()
        collector = Collector(store=store, publisher=publisher, observer=observer)
        reconciler = Reconciler(
            sessions=db_sessions,
            store=store,
            observer=observer,
            announce=collector.announce,
            settings=ReconcileSettings(
                interval_seconds=60, running_grace=GRACE, queued_grace=QUEUED_GRACE
            ),
        )
        failed = await reconciler.reconcile()
        assert sorted(job.id for job in failed) == ["t-lost", "t-pruned"]
        announced = await next_finished(finished)
        assert sorted((e.job_id, e.status) for e in announced) == [
            ("t-lost", "failed"),
            ("t-pruned", "failed"),
        ]
        # A second pass finds nothing more to do.
        assert await reconciler.reconcile() == []
        await publisher.close()

    pruned = await stored(db_sessions, "t-pruned")
    assert pruned.status == "failed"
    assert pruned.error == NO_DIRECTORY_ERROR
    assert pruned.start_time is not None
    assert pruned.completion_time is not None
    assert (await stored(db_sessions, "t-lost")).error == NO_DIRECTORY_ERROR
    for job_id in ("t-alive", "t-recent"):
        assert (await stored(db_sessions, job_id)).status == "running"
    assert (await stored(db_sessions, "t-waiting")).status == "queued"
    assert (await stored(db_sessions, "t-keyed")).status == "queued"


async def test_an_update_arriving_meanwhile_wins(db_sessions: SessionFactory) -> None:
    store = JobStore(db_sessions)
    await running_job(store, "t-raced")
    seen_before = await stored(db_sessions, "t-raced")
    seen = StaleJob(id="t-raced", status="running", updated_at=seen_before.updated_at)
    # Between the reconciliation's read and its write, the execution ends.
    await store.record_update(
        ExecutionUpdate(job_id="t-raced", state="succeeded", completion_time=utcnow(), exit_code=0)
    )
    assert await store.record_vanished([(seen, "gone")], completion_time=utcnow()) == [None]
    assert (await stored(db_sessions, "t-raced")).status == "succeeded"


async def test_a_queued_job_failed_here_still_records_a_late_execution(
    db_sessions: SessionFactory,
) -> None:
    """A request that was only late (a long outage) launches after all: its execution is
    the truth, and it runs once."""
    store = JobStore(db_sessions)
    await store.record_requested(requested("t-late"))
    job = await stored(db_sessions, "t-late")
    seen = StaleJob(id="t-late", status="queued", updated_at=job.updated_at)
    (failed,) = await store.record_vanished([(seen, NO_DIRECTORY_ERROR)], completion_time=utcnow())
    assert failed is not None
    assert failed.status == "failed"
    await store.record_update(
        ExecutionUpdate(job_id="t-late", state="running", start_time=utcnow())
    )
    assert (await stored(db_sessions, "t-late")).status == "running"


@pytest.mark.parametrize("database_backend", ["postgres"], indirect=True)
async def test_the_collector_reconciles_at_start(
    db_sessions: SessionFactory,
    migrated_database_url: str,
    amqp_url: str,
    topology: Topology,
    tmp_path: Path,
) -> None:
    """The running service, not just the function: a job left `running` by an execution
    that vanished while no collector ran is failed as soon as the collector starts."""
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    await running_job(JobStore(db_sessions), "t-vanished")
    await age(db_sessions, "t-vanished", timedelta(seconds=5))
    settings = CollectorSettings(
        database_url=migrated_database_url,
        amqp_url=amqp_url,
        amqp_prefix=topology.prefix,
        jobs_dir=jobs_dir,
        executor="local",
        reconcile_running_grace_seconds=1,
    )
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    try:
        engine = create_engine(migrated_database_url)
        sessions = session_factory(engine)
        try:
            for _ in range(100):
                job = await stored(sessions, "t-vanished")
                if job.status != "running":
                    break
                await asyncio.sleep(0.05)
        finally:
            await engine.dispose()
    finally:
        await runner.cleanup()
    assert job.status == "failed"
    assert job.error == NO_DIRECTORY_ERROR


async def test_a_pass_pages_through_every_stale_job(
    db_sessions: SessionFactory, tmp_path: Path
) -> None:
    """More long-running jobs than a page, alive and oldest: the pass still reaches the
    vanished ones behind them."""
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    store = JobStore(db_sessions)
    observer = LocalJobObserver(jobs_dir=jobs_dir)
    for index in range(5):
        await running_job(store, f"t-alive-{index}")
        JobPaths.of(jobs_dir, f"t-alive-{index}").root.mkdir()
        await age(db_sessions, f"t-alive-{index}", GRACE * 10)
    for index in range(3):
        await running_job(store, f"t-gone-{index}")
        await age(db_sessions, f"t-gone-{index}", GRACE * 2)

    async def announce(_jobs: object) -> None:
        return None

    reconciler = Reconciler(
        sessions=db_sessions,
        store=store,
        observer=observer,
        announce=announce,
        settings=ReconcileSettings(
            interval_seconds=60, running_grace=GRACE, queued_grace=QUEUED_GRACE, batch=2
        ),
    )
    failed = await reconciler.reconcile()
    assert sorted(job.id for job in failed) == ["t-gone-0", "t-gone-1", "t-gone-2"]
