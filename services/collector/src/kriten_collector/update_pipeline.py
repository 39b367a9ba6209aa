"""Hands the observer's updates to the job store without waiting for each commit.

The observer loop only queues an update (`put`); one task stores what has queued up,
as one group (`JobStore.record_updates`: in order, in one transaction, all or none),
while the next group queues behind it. A group that fails is retried whole before any
later update is stored, so the updates of a job are stored in the order observed, and
`on_stored` (which ends with the observer's `forget`) sees only durable updates.
Bounded: a full queue makes `put` wait, which holds the observer's stream back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from kriten_collector.job_store import FinishedJob, JobStore
from kriten_collector.ports import ExecutionUpdate
from kriten_collector.write_batcher import DEFAULT_MAX_BATCH
from kriten_common.logging import get_logger
from kriten_common.transient import is_transient

log = get_logger(__name__)
RETRY_SECONDS = (0.5, 1, 2, 5, 10)

# Called with a stored group and, for each update, the job it made final.
OnStored = Callable[[Sequence[ExecutionUpdate], Sequence[FinishedJob | None]], Awaitable[None]]


class UpdatePipeline:
    def __init__(
        self, store: JobStore, on_stored: OnStored, *, max_batch: int = DEFAULT_MAX_BATCH
    ) -> None:
        self._store = store
        self._on_stored = on_stored
        self._max_batch = max_batch
        self._pending: list[ExecutionUpdate] = []
        self._changed = asyncio.Condition()

    async def put(self, update: ExecutionUpdate) -> None:
        """Queues `update` to be stored after those queued before it."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._pending) < self._max_batch)
            self._pending.append(update)
            self._changed.notify_all()

    async def run(self) -> None:
        """Stores queued updates for ever, one group at a time."""
        while True:
            group = await self._next_group()
            results = await self._store_group(group)
            await self._on_stored(group, results)

    async def _next_group(self) -> list[ExecutionUpdate]:
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._pending))
            group, self._pending = self._pending, []
            self._changed.notify_all()
        return group

    async def _store_group(self, group: list[ExecutionUpdate]) -> list[FinishedJob | None]:
        """Stores `group`, retrying until it is stored: dropping it would lose updates the
        observer already reported, and storing later ones first would reorder a job's."""
        attempt = 0
        while True:
            try:
                return await self._store.record_updates(group)
            except asyncio.CancelledError:
                raise
            except Exception as problem:
                delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                if is_transient(problem):
                    # An outage fails every write the same way; no traceback, it is no bug.
                    log.warning(
                        "job_updates_not_stored",
                        count=len(group),
                        retry_in=delay,
                        error=str(problem),
                    )
                else:
                    log.exception("job_updates_failed", count=len(group), retry_in=delay)
                attempt += 1
                await asyncio.sleep(delay)
