"""Which tasks have completion callbacks: one database read for many finished jobs, read
again after a task's change is announced, after the broker connection came back, or once
stale."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_collector.callback_tasks import CallbackTasks
from kriten_common.db.engine import SessionFactory, create_engine, session_factory
from kriten_common.db.models import Runner, Task
from kriten_common.messages import ConfigChanged


class CountingSessions:
    """The session factory, counting the sessions opened (one per read)."""

    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions
        self.opened = 0

    def __call__(self) -> AsyncSession:
        self.opened += 1
        return self._sessions()


@pytest.fixture
async def sessions(migrated_database_url: str) -> AsyncIterator[CountingSessions]:
    engine = create_engine(migrated_database_url)
    made = session_factory(engine)
    async with made() as session:
        session.add(Runner(name="python", git_url="https://example.org/r.git"))
        await session.commit()
        session.add(Task(name="quiet", runner="python", command="true"))
        session.add(
            Task(
                name="loud",
                runner="python",
                command="true",
                callbacks=[{"url": "https://receiver.example/a", "events": ["failed"]}],
            )
        )
        await session.commit()
    yield CountingSessions(made)
    await engine.dispose()


async def _set_callbacks(sessions: CountingSessions, task: str, callbacks: Any) -> None:
    async with sessions._sessions() as session:
        row = await session.get(Task, task)
        assert row is not None
        row.callbacks = callbacks
        session.add(row)
        await session.commit()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_many_finished_jobs_cost_one_read(sessions: CountingSessions) -> None:
    tasks = CallbackTasks(sessions, clock=Clock())
    answers = await asyncio.gather(
        *(tasks.wanted("quiet", "succeeded") for _ in range(50)),
        tasks.wanted("loud", "failed"),
        tasks.wanted("loud", "succeeded"),
        tasks.wanted("gone", "failed"),
    )
    assert answers == [False] * 50 + [True, False, False]
    assert sessions.opened == 1
    assert await tasks.wanted("quiet", "failed") is False
    assert sessions.opened == 1


async def test_an_announced_change_of_a_task_is_seen_by_the_next_job(
    sessions: CountingSessions,
) -> None:
    clock = Clock()
    tasks = CallbackTasks(sessions, ttl_seconds=60, clock=clock)
    assert await tasks.wanted("quiet", "succeeded") is False
    await _set_callbacks(
        sessions, "quiet", [{"url": "https://r.example/", "events": ["succeeded"]}]
    )
    # Not announced: the cached answer stands until it is stale.
    assert await tasks.wanted("quiet", "succeeded") is False
    # Other kinds of change do not concern callbacks.
    await tasks.on_event(ConfigChanged(kind="webhook", name="quiet"))
    assert await tasks.wanted("quiet", "succeeded") is False
    await tasks.on_event(ConfigChanged(kind="task", name="quiet"))
    assert await tasks.wanted("quiet", "succeeded") is True
    assert sessions.opened == 2

    # Removed, and never announced (the broker was down): seen once the answer is stale.
    await _set_callbacks(sessions, "quiet", None)
    clock.now += 59
    assert await tasks.wanted("quiet", "succeeded") is True
    clock.now += 2
    assert await tasks.wanted("quiet", "succeeded") is False

    # The broker connection came back: a change may have been missed, read again.
    await _set_callbacks(sessions, "quiet", [{"url": "https://r.example/", "events": ["failed"]}])
    tasks.invalidate()
    assert await tasks.wanted("quiet", "failed") is True


async def test_a_read_that_began_before_a_change_is_not_kept(sessions: CountingSessions) -> None:
    tasks = CallbackTasks(sessions, clock=Clock())
    reading = asyncio.create_task(tasks.wanted("quiet", "succeeded"))
    # The announcement arrives while the read is on its way: what it read may predate it.
    await asyncio.sleep(0)
    await tasks.on_event(ConfigChanged(kind="task", name="quiet"))
    assert await reading is False
    await tasks.wanted("quiet", "succeeded")
    assert sessions.opened == 2


async def test_empty_or_null_callbacks_are_none(sessions: CountingSessions) -> None:
    await _set_callbacks(sessions, "quiet", [])
    await _set_callbacks(sessions, "loud", None)
    tasks = CallbackTasks(sessions)
    assert await tasks.wanted("quiet", "succeeded") is False
    assert await tasks.wanted("loud", "failed") is False
