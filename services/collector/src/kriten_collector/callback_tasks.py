"""Which tasks have completion callbacks, and for which statuses, read once for many jobs.

Every finished job's `job.finished` reaches the callbacks' consumer, and most tasks have
no callbacks: reading the task for each job was a database session per job, a third of
the collector's CPU at a burst of jobs. The answer is cached for all tasks at once (one
query of the tasks that have callbacks), and read again after any task changes (the
api's `config.changed`, through the collector's subscription), after the broker
connection comes back (a change may have been missed meanwhile), or once it is
`ttl_seconds` old, the safety net for an announcement that was never sent (the api logs
`config_change_not_announced` when the broker is down).

Only the "whether" is cached: a job that has callbacks to call reads its task afresh
(URLs, secrets) before calling them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlmodel import col, select

from kriten_common.db.engine import SessionFactory, read_session
from kriten_common.db.models import Task
from kriten_common.messages import ConfigChanged, Event

# How stale the answer may be when a task's change was not announced.
TTL_SECONDS = 5.0


class CallbackTasks:
    def __init__(
        self,
        sessions: SessionFactory,
        *,
        ttl_seconds: float = TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._ttl = ttl_seconds
        self._clock = clock
        # Task name → the statuses some callback of it is for.
        self._statuses: Mapping[str, frozenset[str]] = {}
        self._loaded_at: float | None = None
        # Bumped by every invalidation: a read that began before one answers the job that
        # asked before the change, but is not kept (jobs waiting behind it read again).
        self._generation = 0
        self._reading: asyncio.Lock = asyncio.Lock()

    async def wanted(self, task: str, status: str) -> bool:
        """Whether a job of `task` that ended `status` has a callback to call."""
        return status in (await self._current()).get(task, frozenset())

    def invalidate(self) -> None:
        self._loaded_at = None
        self._generation += 1

    async def on_event(self, event: Event) -> None:
        """The `config.changed` subscription's handler."""
        if isinstance(event, ConfigChanged) and event.kind == "task":
            self.invalidate()

    def _fresh(self) -> bool:
        return self._loaded_at is not None and self._clock() - self._loaded_at < self._ttl

    async def _current(self) -> Mapping[str, frozenset[str]]:
        if self._fresh():
            return self._statuses
        # One read however many jobs finish meanwhile.
        async with self._reading:
            if self._fresh():
                return self._statuses
            generation = self._generation
            statuses = await self._read()
            if generation == self._generation:
                self._statuses, self._loaded_at = statuses, self._clock()
            return statuses

    async def _read(self) -> dict[str, frozenset[str]]:
        async with read_session(self._sessions) as session:
            rows = (
                await session.exec(
                    select(Task.name, Task.callbacks).where(col(Task.callbacks).is_not(None))
                )
            ).all()
        return {name: statuses for name, callbacks in rows if (statuses := _statuses(callbacks))}


def _statuses(callbacks: Any) -> frozenset[str]:
    if not isinstance(callbacks, list):
        return frozenset()  # a JSON null
    return frozenset(
        status
        for callback in callbacks
        if isinstance(callback, dict)
        for status in callback.get("events", ())
    )
