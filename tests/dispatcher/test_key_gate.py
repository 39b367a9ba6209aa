"""The concurrency-key gate before the launcher, on both databases: a job launches when
its key is free and nothing accepted before it waits; it waits (without using an
attempt) otherwise; `replace` and `skip` end it with the reason; two dispatchers on one
database, and redeliveries, keep one job of a key launched at a time."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import select

from kriten_common.clock import utcnow
from kriten_common.crypto import SecretBox
from kriten_common.db.engine import SessionFactory, create_engine, session_factory
from kriten_common.db.models import Job, KeyedJob, Runner, Task
from kriten_common.messages import (
    ConcurrencyPolicy,
    JobCancelRequested,
    JobDispatchFailed,
    JobRequested,
)
from kriten_common.outcomes import RetryableError, Waiting
from kriten_common.settings import DEVELOPMENT_ENCRYPTION_KEY
from kriten_dispatcher import key_gate
from kriten_dispatcher.dispatching import Dispatcher
from tests.dispatcher.test_dispatching import CountingLauncher, RecordingPublisher

START = utcnow() - timedelta(minutes=1)


def keyed(n: int, *, key: str = "device:1", policy: ConcurrencyPolicy = "queue") -> JobRequested:
    """The n-th accepted job of `key`."""
    return JobRequested(
        job_id=f"sync-{key.replace(':', '')}-{n}",
        task="sync",
        owner="root",
        owner_id="u",
        source="webhook",
        input="{}",
        occurred_at=START + timedelta(seconds=n),
        concurrency_key=key,
        concurrency_policy=policy,
    )


async def seeded(sessions: SessionFactory) -> tuple[SessionFactory, CountingLauncher]:
    async with sessions() as session:
        session.add(Runner(name="python", git_url="file:///repo"))
        await session.commit()
        session.add(Task(name="sync", runner="python", command="echo hi"))
        await session.commit()
    return sessions, CountingLauncher()


@pytest.fixture
async def world(db_sessions: SessionFactory) -> tuple[SessionFactory, CountingLauncher]:
    return await seeded(db_sessions)


def dispatcher(
    sessions: SessionFactory, launcher: CountingLauncher, settle: float = 0
) -> tuple[Dispatcher, RecordingPublisher]:
    publisher = RecordingPublisher()
    made = Dispatcher(
        launcher=launcher,
        publisher=publisher,  # type: ignore[arg-type]
        sessions=sessions,
        box=SecretBox(DEVELOPMENT_ENCRYPTION_KEY),
        executor="local",
        key_settle_seconds=settle,
    )
    return made, publisher


async def record(sessions: SessionFactory, job_id: str, status: str) -> None:
    """What the collector writes as a job runs and ends."""
    async with sessions() as session:
        job = await session.get(Job, job_id) or Job(
            id=job_id, task="sync", owner="root", owner_id="u"
        )
        job.status = status
        session.add(job)
        await session.commit()


async def test_jobs_of_one_key_wait_their_turn(world: Any) -> None:
    sessions, launcher = world
    gate, _ = dispatcher(sessions, launcher)
    first, second, third = keyed(1), keyed(2), keyed(3)
    await gate.handle(first)
    for waiting in (third, second):
        with pytest.raises(Waiting, match="key busy with sync-device1-1"):
            await gate.handle(waiting)
    await gate.handle(first)  # a redelivery of the launched one: launched again (idempotent)
    await record(sessions, first.job_id, "running")
    with pytest.raises(Waiting):
        await gate.handle(third)
    await record(sessions, first.job_id, "succeeded")
    with pytest.raises(Waiting, match="waiting behind sync-device1-2"):
        await gate.handle(third)  # free, but the second was accepted before it
    await gate.handle(second)
    await gate.handle(keyed(1, key="device:2"))  # another key: beside it
    await record(sessions, second.job_id, "failed")
    await gate.handle(third)
    assert [spec.job_id for spec in launcher.launched] == [
        "sync-device1-1",
        "sync-device1-1",
        "sync-device1-2",
        "sync-device2-1",
        "sync-device1-3",
    ]
    async with sessions() as session:
        # The line forgets final jobs.
        assert await session.get(KeyedJob, first.job_id) is None


async def test_replace_ends_the_waiting_ones_for_the_newest(world: Any) -> None:
    sessions, launcher = world
    gate, publisher = dispatcher(sessions, launcher)
    jobs = [keyed(n, policy="replace") for n in (1, 2, 3)]
    await gate.handle(jobs[0])
    with pytest.raises(Waiting):
        await gate.handle(jobs[1])
    with pytest.raises(Waiting):
        await gate.handle(jobs[2])
    await gate.handle(jobs[1])  # back from its delay queue: replaced
    await gate.handle(jobs[1])  # a redelivery announces it again
    ended = [e for e in publisher.events if isinstance(e, JobDispatchFailed)]
    assert [(e.job_id, e.status, e.error) for e in ended] == [
        ("sync-device1-2", "cancelled", "replaced by sync-device1-3")
    ] * 2
    await record(sessions, jobs[0].job_id, "succeeded")
    await record(sessions, jobs[1].job_id, "cancelled")
    await gate.handle(jobs[2])
    assert [spec.job_id for spec in launcher.launched] == ["sync-device1-1", "sync-device1-3"]


async def test_skip_ends_a_job_whose_key_is_busy(world: Any) -> None:
    sessions, launcher = world
    gate, publisher = dispatcher(sessions, launcher)
    await gate.handle(keyed(1, policy="skip"))
    await gate.handle(keyed(2, policy="skip"))
    (ended,) = [e for e in publisher.events if isinstance(e, JobDispatchFailed)]
    assert (ended.job_id, ended.status) == ("sync-device1-2", "skipped")
    assert ended.error == "skipped: key busy with sync-device1-1"
    assert [spec.job_id for spec in launcher.launched] == ["sync-device1-1"]


async def test_a_waiting_job_is_cancelled_at_once(world: Any) -> None:
    sessions, launcher = world
    gate, publisher = dispatcher(sessions, launcher)
    first, second = keyed(1), keyed(2)
    await gate.handle(first)
    with pytest.raises(Waiting):
        await gate.handle(second)
    cancel = JobCancelRequested(job_id=second.job_id, requested_by="root")
    await gate.handle(cancel)
    await gate.handle(second)  # back from its delay queue: ended, announced again
    ended = [e for e in publisher.events if isinstance(e, JobDispatchFailed)]
    assert [(e.job_id, e.status, e.error) for e in ended] == [
        ("sync-device1-2", "cancelled", "cancelled")
    ] * 2
    # A launched one is the launcher's to stop (this one's cannot: not running yet).
    with pytest.raises(RetryableError, match="not running yet"):
        await gate.handle(JobCancelRequested(job_id=first.job_id, requested_by="root"))
    assert [spec.job_id for spec in launcher.launched] == ["sync-device1-1"]


async def test_a_fresh_job_settles_before_it_starts(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions, launcher = world
    now = utcnow()
    monkeypatch.setattr(key_gate, "utcnow", lambda: now + timedelta(seconds=10))
    gate, _ = dispatcher(sessions, launcher, settle=30)
    fresh = keyed(1).model_copy(update={"occurred_at": now})
    with pytest.raises(Waiting, match="settling") as waited:
        await gate.handle(fresh)
    assert waited.value.delay == 20
    assert launcher.launched == []


async def test_a_redelivery_giving_another_key_keeps_the_jobs_place(world: Any) -> None:
    """A sender's retry with a changed body (or a key expression edited meanwhile) gives
    the same job id another key: it is judged in the line it joined first, not refused
    (which would dead-letter it and record the job failed while it runs)."""
    sessions, launcher = world
    gate, _ = dispatcher(sessions, launcher)
    await gate.handle(keyed(1))
    moved = keyed(1).model_copy(update={"concurrency_key": "device:9"})
    await gate.handle(moved)  # launched already: launched again (idempotent)
    with pytest.raises(Waiting, match="key busy with sync-device1-1"):
        await gate.handle(keyed(2))
    async with sessions() as session:
        rows = (await session.exec(select(KeyedJob.job_id, KeyedJob.key))).all()
    assert sorted(rows) == [("sync-device1-1", "device:1"), ("sync-device1-2", "device:1")]
    assert [spec.job_id for spec in launcher.launched] == ["sync-device1-1"] * 2


@pytest.mark.integration
async def test_two_dispatchers_launch_one_job_of_a_key(migrated_postgres_url: str) -> None:
    # PostgreSQL only: the advisory lock is what arbitrates between replicas (SQLite
    # serves one dispatcher, whose own lock does).
    engine = create_engine(migrated_postgres_url)
    try:
        sessions, launcher = await seeded(session_factory(engine))
        replicas = [dispatcher(sessions, launcher)[0] for _ in range(2)]
        outcomes = await asyncio.gather(
            *(replicas[n % 2].handle(keyed(n)) for n in range(1, 9)), return_exceptions=True
        )
    finally:
        await engine.dispose()
    assert len(launcher.launched) == 1
    assert sum(isinstance(outcome, Waiting) for outcome in outcomes) == 7
