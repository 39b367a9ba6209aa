"""Group commit for the collector's database writes: one transaction per batch.

Callers hand over writes and await their own result. While one batch is being committed,
further writes queue up and go together in the next one (at most `max_batch`), started
as soon as the writer is free: no timer, so a lone write goes at once and under load the
per-transaction cost is paid per batch. The same shape as `kriten_common.amqp.Publisher`.

A group of writes handed over together (`write_all`) is never split across batches: it
is stored whole or not at all, which lets a caller that retries it keep its order. A
failed commit fails every caller of the batch with the same exception (so a consumer
still tells a transient outage from a bug); nothing of that batch was stored.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from kriten_common.logging import without_ids

Item = TypeVar("Item")
Result = TypeVar("Result")

# Stores a batch in one transaction; returns one result per item, in order.
CommitBatch = Callable[[Sequence[Item]], Awaitable[Sequence[Result]]]
# Told the size of each batch committed (a metric's `observe`).
BatchSizes = Callable[[int], None]

DEFAULT_MAX_BATCH = 500


@dataclass
class _Group(Generic[Item, Result]):
    items: list[Item]
    done: asyncio.Future[list[Result]]


class WriteBatcher(Generic[Item, Result]):
    def __init__(
        self,
        commit: CommitBatch[Item, Result],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        batch_sizes: BatchSizes | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._commit = commit
        self._max_batch = max_batch
        self._batch_sizes = batch_sizes
        self._waiting: deque[_Group[Item, Result]] = deque()
        self._writer: asyncio.Task[None] | None = None

    async def write(self, item: Item) -> Result:
        """Returns the item's result once the transaction that stored it committed."""
        (result,) = await self.write_all([item])
        return result

    async def write_all(self, items: Sequence[Item]) -> list[Result]:
        """Stores `items` in order, all in the same transaction; their results."""
        if not items:
            return []
        done: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Group(list(items), done))
        if self._writer is None:
            # The writer serves every caller: its lines carry none of the first one's ids.
            self._writer = asyncio.create_task(
                self._write_waiting(), name="collector-writes", context=without_ids()
            )
        # shield: a caller that gives up must not cancel the batch others wait on.
        return await asyncio.shield(done)

    def _take(self) -> list[_Group[Item, Result]]:
        """The next batch: whole groups in arrival order, at most `max_batch` items
        unless a single group is larger (it then goes alone)."""
        taken = [self._waiting.popleft()]
        size = len(taken[0].items)
        while self._waiting and size + len(self._waiting[0].items) <= self._max_batch:
            size += len(self._waiting[0].items)
            taken.append(self._waiting.popleft())
        return taken

    async def _write_waiting(self) -> None:
        batch: list[_Group[Item, Result]] = []
        try:
            while self._waiting:
                batch = self._take()
                items = [item for group in batch for item in group.items]
                try:
                    results = list(await self._commit(items))
                    if len(results) != len(items):
                        raise AssertionError("a batch commit returned a result count of its own")
                except Exception as problem:
                    for group in batch:
                        if not group.done.done():
                            group.done.set_exception(problem)
                    batch = []
                    continue
                if self._batch_sizes is not None:
                    self._batch_sizes(len(items))
                start = 0
                for group in batch:
                    end = start + len(group.items)
                    if not group.done.done():
                        group.done.set_result(results[start:end])
                    start = end
                batch = []
        finally:
            self._writer = None
            # Only when cancelled (the loop shutting down) or on a bug: no caller may wait
            # for ever on a batch that will never be written.
            for group in (*batch, *self._waiting):
                if not group.done.done():
                    group.done.cancel()
            self._waiting.clear()
